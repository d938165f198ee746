"""Configuration, read from the environment in one place (12-factor)."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from . import defaults
from .exceptions import ConfigError
from .core.rules import parse_duration

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# Fields that hold credentials: SecretStr, so no repr, log line or traceback shows them.
SECRETS = ("jira_api_token", "jira_pat", "jira_webhook_secret", "jira_webhook_token", "sendgrid_api_key",
           "operator_password", "secret_key")


class _Environment:
    """The process environment as from_env reads it: empty means unset; the repr shows no value,
    so a traceback with locals does not print every secret it holds."""

    def __init__(self, env):
        self._env = env

    def get(self, name: str) -> str | None:
        return self._env.get(name) or None

    def __repr__(self) -> str:
        return "<environment>"


def _without_password(url: str | None) -> str | None:
    """``url`` with its password (a Heroku REDIS_URL has one) replaced by ``***``."""
    try:
        parts = urlsplit(url) if url else None
        if parts is None or parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "***"


def _flag(env, name) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1 or 0 (true or false), got {raw!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _jira_base_url(raw: str) -> str:
    """JIRA_BASE_URL without its trailing ``/``; https://, or http:// to this machine only.

    Credentials go with every request, so plain HTTP is refused but to a loopback address.
    """
    try:
        parts = urlsplit(raw)
        host = parts.hostname
    except ValueError as e:
        raise ConfigError(f"JIRA_BASE_URL is not a URL ({e}): {raw!r}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"JIRA_BASE_URL must start with http:// or https://, got {raw!r}")
    if not host:
        raise ConfigError(f"JIRA_BASE_URL has no host name: {raw!r}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(f"JIRA_BASE_URL must start with https://, got {raw!r}: over http:// the JIRA credentials "
                          "would cross the network in clear (http:// is only accepted for localhost, "
                          "127.0.0.0/8 and ::1)")
    return raw.rstrip("/")


def _duration(env, name, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return parse_duration(raw)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None


def _float(env, name, default):
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None


def _rate(env, name, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if not value >= 0:
        raise ConfigError(f"{name} must be a number of requests per second (0: unpaced), got {raw!r}")
    return value


def _count(env, name, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def _reply_domain(raw: str | None) -> str | None:
    """REPLY_DOMAIN lower-cased: a DNS name (replies.example.com), not an address or a URL."""
    if raw is None:
        return None
    value = raw.strip().lower().rstrip(".")
    if not _DOMAIN.fullmatch(value):
        raise ConfigError(f"REPLY_DOMAIN must be a domain name such as replies.example.com (its MX points to "
                          f"SendGrid Inbound Parse), got {raw!r}")
    return value


def _log_format(raw: str | None) -> str:
    from .logs import FORMATS
    value = (raw or "text").strip().lower()
    if value not in FORMATS:
        raise ConfigError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, got {raw!r}")
    return value


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything the web and worker processes read from their environment.

    Each embedded default (private Redis, outbox, JIRA dry run) is replaced by
    setting the matching variable. Credentials (SECRETS) are SecretStr, given as
    str or SecretStr; ``reveal`` gives the value to the one call that sends it.
    """

    redis_url: str | None = None
    jira_base_url: str | None = None
    jira_user_email: str | None = None
    jira_api_token: SecretStr | None = None
    jira_pat: SecretStr | None = None
    jira_webhook_secret: SecretStr | None = None
    jira_webhook_token: SecretStr | None = None
    allow_unauthenticated_webhooks: bool = False
    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_host: str = "https://api.sendgrid.com"
    mail_from: str = "relance <relance@localhost>"
    mail_reply_to: str | None = None
    operator_user: str = "operator"
    operator_password: SecretStr | None = None
    rules_file: Path = PROJECT_ROOT / defaults.RULES_FILE
    templates_dir: Path = PROJECT_ROOT / "templates"
    outbox_dir: Path = PROJECT_ROOT / defaults.OUTBOX_DIR
    queue_name: str = defaults.QUEUE_NAME
    job_timeout: float = defaults.JOB_TIMEOUT_SECONDS
    maintenance_interval: float = defaults.MAINTENANCE_INTERVAL_SECONDS
    timer_poll: float = defaults.TIMER_POLL_SECONDS
    timer_job_size: int = defaults.TIMER_JOB_SIZE
    worker_threads: int = defaults.WORKER_THREADS   # jobs one worker process runs at once
    jira_rate: float = defaults.JIRA_RATE_PER_SECOND            # 0: unpaced (429s still pause every worker)
    sendgrid_rate: float = defaults.SENDGRID_RATE_PER_SECOND
    retention: int = defaults.RETENTION_SECONDS
    reconcile_interval: int = defaults.RECONCILE_INTERVAL_SECONDS
    log_format: str = "text"
    metrics_public: bool = False
    # Email both ways (docs/email.md)
    secret_key: SecretStr | None = None             # RELANCE_SECRET_KEY: signs reply addresses
    reply_domain: str | None = None                 # REPLY_DOMAIN: where Inbound Parse receives replies
    reply_accept_any_sender: bool = False
    reply_token_days: int = defaults.REPLY_TOKEN_DAYS
    sendgrid_webhook_public_key: str | None = None  # verifies Inbound Parse and Event Webhook posts

    @property
    def jira_configured(self) -> bool:
        return bool(self.jira_base_url)

    @property
    def sendgrid_configured(self) -> bool:
        return bool(self.sendgrid_api_key)

    @property
    def replies_enabled(self) -> bool:
        """Customer emails carry a signed Reply-To at REPLY_DOMAIN (checked: then RELANCE_SECRET_KEY is set)."""
        return bool(self.reply_domain)

    def __post_init__(self):
        for name in SECRETS:
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, SecretStr(value) if value else None)

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["redis_url"] = _without_password(self.redis_url)
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def reveal(self, name: str) -> str | None:
        """The plain value of the secret field ``name``, for the call that sends it; None when unset."""
        if name not in SECRETS:
            raise AttributeError(f"{name!r} is not a secret setting")
        secret = getattr(self, name)
        return secret.get_secret_value() if secret is not None else None

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        env = _Environment(os.environ if env is None else env)
        get = env.get
        base = get("JIRA_BASE_URL")
        base = _jira_base_url(base) if base else None
        if base and not (get("JIRA_PAT") or (get("JIRA_USER_EMAIL") and get("JIRA_API_TOKEN"))):
            raise ConfigError(
                "JIRA_BASE_URL is set but no credentials: set JIRA_USER_EMAIL and JIRA_API_TOKEN "
                "(JIRA Cloud) or JIRA_PAT (Data Center)"
            )
        if get("SENDGRID_API_KEY") and not get("MAIL_FROM"):
            raise ConfigError("SENDGRID_API_KEY is set but MAIL_FROM is not: set it to a sender SendGrid has "
                              "verified, e.g. MAIL_FROM='Support <support@example.com>'")
        reply_domain = _reply_domain(get("REPLY_DOMAIN"))
        if reply_domain and not get("RELANCE_SECRET_KEY"):
            raise ConfigError("REPLY_DOMAIN is set but RELANCE_SECRET_KEY is not: set it to a long random string "
                              "(python -c 'import secrets; print(secrets.token_urlsafe(32))'); it signs the "
                              "reply addresses so that nobody can forge one")
        if get("RELANCE_SECRET_KEY") and len(get("RELANCE_SECRET_KEY")) < 16:
            raise ConfigError("RELANCE_SECRET_KEY is too short: give at least 16 characters (32 random bytes "
                              "from secrets.token_urlsafe(32) is right)")
        rules = get("RULES_FILE")
        return cls(
            redis_url=get("REDIS_URL"),
            jira_base_url=base,
            jira_user_email=get("JIRA_USER_EMAIL"),
            jira_api_token=get("JIRA_API_TOKEN"),
            jira_pat=get("JIRA_PAT"),
            jira_webhook_secret=get("JIRA_WEBHOOK_SECRET"),
            jira_webhook_token=get("JIRA_WEBHOOK_TOKEN"),
            allow_unauthenticated_webhooks=_flag(env, "ALLOW_UNAUTHENTICATED_WEBHOOKS"),
            sendgrid_api_key=get("SENDGRID_API_KEY"),
            sendgrid_api_host=(get("SENDGRID_API_HOST") or cls.sendgrid_api_host).rstrip("/"),
            mail_from=get("MAIL_FROM") or cls.mail_from,
            mail_reply_to=get("MAIL_REPLY_TO"),
            operator_user=get("OPERATOR_USER") or cls.operator_user,
            operator_password=get("OPERATOR_PASSWORD"),
            rules_file=Path(rules) if rules else cls.rules_file,
            outbox_dir=Path(get("OUTBOX_DIR")) if get("OUTBOX_DIR") else cls.outbox_dir,
            templates_dir=Path(get("RELANCE_TEMPLATES_DIR")) if get("RELANCE_TEMPLATES_DIR") else cls.templates_dir,
            queue_name=get("RELANCE_QUEUE") or cls.queue_name,
            job_timeout=_float(env, "RELANCE_JOB_TIMEOUT", cls.job_timeout),
            maintenance_interval=_float(env, "RELANCE_MAINTENANCE_INTERVAL", cls.maintenance_interval),
            timer_poll=_float(env, "RELANCE_TIMER_POLL", cls.timer_poll),
            timer_job_size=_count(env, "RELANCE_TIMER_JOB_SIZE", cls.timer_job_size),
            worker_threads=_count(env, "RELANCE_WORKER_THREADS", cls.worker_threads),
            jira_rate=_rate(env, "RELANCE_JIRA_RATE", cls.jira_rate),
            sendgrid_rate=_rate(env, "RELANCE_SENDGRID_RATE", cls.sendgrid_rate),
            retention=_duration(env, "RELANCE_RETENTION", cls.retention),
            reconcile_interval=_duration(env, "RELANCE_RECONCILE_INTERVAL", cls.reconcile_interval),
            log_format=_log_format(get("LOG_FORMAT")),
            metrics_public=(get("METRICS_PUBLIC") or "").strip().lower() in ("1", "true", "yes"),
            secret_key=get("RELANCE_SECRET_KEY"),
            reply_domain=reply_domain,
            reply_accept_any_sender=_flag(env, "REPLY_ACCEPT_ANY_SENDER"),
            reply_token_days=int(_duration(env, "REPLY_TOKEN_TTL", defaults.REPLY_TOKEN_DAYS * 86400) // 86400) or 1,
            sendgrid_webhook_public_key=get("SENDGRID_WEBHOOK_PUBLIC_KEY"),
        )

    def replace(self, **changes) -> "Settings":
        return replace(self, **changes)
