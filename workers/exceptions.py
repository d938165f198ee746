"""One exception class per failure mode."""


class RelanceError(Exception):
    """Base class of relance's own errors."""


class RulesError(RelanceError):
    """The rules file is invalid. ``problems`` holds one line-numbered message each."""

    def __init__(self, path, problems):
        self.path = str(path)
        self.problems = list(problems)
        super().__init__("\n".join(f"{self.path}:{p}" for p in self.problems))


class ConfigError(RelanceError):
    """An environment variable holds a value the service cannot use."""


class PayloadError(RelanceError):
    """A webhook body is not a JIRA event the service can read."""


class TransientError(RelanceError):
    """A remote answered 429/5xx or did not answer: the job must be retried.

    ``retry_after`` is the delay in seconds the remote asked for, if any.
    """

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class TicketBusy(TransientError):
    """Another job held the ticket's decision lock too long: retry the job later."""


class EffectBusy(TransientError):
    """Another execution of the same job is performing this effect right now: retry later."""


class JiraError(RelanceError):
    """JIRA refused a request for good (4xx other than 429): retrying will not help."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class TransitionUnavailable(JiraError):
    """No transition leads from the ticket's current status to the wanted one."""


class MailError(RelanceError):
    """The mail provider refused a message for good (400/401/403)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class NotifyError(RelanceError):
    """A chat webhook refused a message for good (4xx other than 429)."""


class RecipientUnknown(RelanceError):
    """An email's recipient has no address we can see (e.g. hidden on JIRA Cloud)."""


class RecipientInvalid(MailError):
    """An email's recipient address is not one a message can be sent to (say, it holds a line break)."""


class ReplyRefused(RelanceError):
    """An email reply relance will not post to JIRA. ``reason`` is a short code
    (forged_token, expired_token, wrong_sender, auto_reply, spf_fail, dkim_fail, flood, ...)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ReplyTokenInvalid(ReplyRefused):
    """A reply address that relance did not issue (forged, mistyped, or signed with another key)."""

    def __init__(self, message: str):
        super().__init__("forged_token", message)


class ReplyTokenExpired(ReplyRefused):
    """A genuine reply address past REPLY_TOKEN_TTL."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__("expired_token", message)
        self.key = key


class InboundError(RelanceError):
    """A POST to the inbound-mail endpoint is not a SendGrid Inbound Parse post relance can read."""
