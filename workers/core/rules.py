"""The rules file: parsed, validated with line numbers, and turned into a RuleSet.

A bad file raises RulesError whose messages read ``<line>: <where>: <problem>``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Literal

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, ValidationError,
                      field_validator, model_validator)

from .calendars import Calendar, CalendarSpec
from ..exceptions import RulesError
from .rules_yaml import read_yaml, where

LIFECYCLE_STATES = ("open", "waiting_for_feedback", "resolved", "reopened", "closed")
RECIPIENT_ROLES = ("reporter", "assignee")

_DURATION_PART = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value) -> int:
    """Seconds in ``30s``, ``15m``, ``72h``, ``5d``, ``1w`` or a sum like ``1d12h``.

    A bare integer counts seconds. Raises ValueError on anything else.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("a duration is like 30s, 15m, 72h or 5d")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return value
    text = str(value).strip().lower()
    pos, total = 0, 0
    for m in _DURATION_PART.finditer(text):
        if text[pos:m.start()].strip():
            break
        total += int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not text or text[pos:].strip() or total <= 0:
        raise ValueError(f"invalid duration {value!r}: use 30s, 15m, 72h, 5d (or a sum like 1d12h)")
    return total


class Span(int):
    """Seconds of a duration, remembering how the file wrote it (``1d`` is not ``24h`` in working time)."""

    text: str | int                 # as written: "1d", or a bare number of seconds

    def __new__(cls, seconds: int, text: str | int) -> "Span":
        span = int.__new__(cls, seconds)
        span.text = text
        return span


def _span(value) -> Span:
    return value if isinstance(value, Span) else Span(parse_duration(value), value)


Duration = Annotated[int, PlainValidator(_span)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


WHO = ("customer", "support", "anyone")
_NAME = r"^[a-z0-9_]+$"                   # template names
_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"          # environment variable names
Names = str | list[str]                    # one name, or any of several


def names(value: Names | None) -> tuple[str, ...]:
    """A ``Names`` field as a tuple (empty when unset)."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


class Trigger(_Strict):
    """What starts a rule: the ticket entering or leaving a lifecycle state, being created, or
    getting a comment; ``by`` says whose doing it must be (the comment's author for ``commented``);
    or ``email: bounced``: an email relance sent to the customer bounced, was blocked or dropped
    (SendGrid's Event Webhook says so)."""

    entered: Names | None = None
    left: Names | None = None
    created: Literal[True] | None = None
    commented: Literal["customer", "support", "anyone"] | None = None
    email: Literal["bounced"] | None = None
    by: Literal["customer", "support", "anyone"] = "anyone"

    @model_validator(mode="after")
    def _one(self):
        if sum(x is not None for x in (self.entered, self.left, self.created, self.commented, self.email)) != 1:
            raise ValueError("give exactly one of 'entered', 'left', 'created: true', 'commented' or 'email'")
        if self.commented is not None and self.by != "anyone":
            raise ValueError("'commented' already says by whom: commented: customer | support | anyone")
        if self.email is not None and self.by != "anyone":
            raise ValueError("'email: bounced' is about the customer's email: it takes no 'by'")
        return self

    @property
    def kind(self) -> str:
        for kind in ("entered", "left", "created", "commented", "email"):
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated: one kind is set")

    @property
    def states(self) -> tuple[str, ...]:
        """The lifecycle states an ``entered`` or ``left`` trigger names (else empty)."""
        return names(self.entered if self.entered is not None else self.left)

    @property
    def who(self) -> str:
        """Whose doing the event must be: customer, support or anyone."""
        return self.commented or self.by

    def describe(self) -> str:
        if self.kind == "created":
            return "creation"
        if self.kind == "commented":
            return f"a comment by {self.commented}"
        if self.kind == "email":
            return "an email to the customer that bounced"
        return f"{self.kind} {' or '.join(self.states)}" + (f" by {self.by}" if self.by != "anyone" else "")


class Conditions(_Strict):
    """``if:``: what must hold of the ticket when the rule fires; each a name or a list of names."""

    state: Names | None = None
    project: Names | None = None
    issue_type: Names | None = None
    priority: Names | None = None
    has_label: Names | None = None
    lacks_label: Names | None = None

    def failing(self, state: str | None, project: str | None, issue_type: str | None, priority: str | None,
                labels) -> str | None:
        """Why the conditions do not hold for a ticket with these attributes, or None if they do."""
        def among(value, wanted, what):
            if wanted and (value or "").casefold() not in {w.casefold() for w in wanted}:
                return f"{what} is {value or 'unknown'}, not {' or '.join(wanted)}"
            return None
        labels = set(labels or ())
        for why in (among(state, names(self.state), "state"), among(project, names(self.project), "project"),
                    among(issue_type, names(self.issue_type), "issue type"),
                    among(priority, names(self.priority), "priority")):
            if why:
                return why
        missing = [label for label in names(self.has_label) if label not in labels]
        if missing:
            return f"lacks label {missing[0]}"
        present = [label for label in names(self.lacks_label) if label in labels]
        if present:
            return f"has label {present[0]}"
        return None


class EmailAction(_Strict):
    to: str | list[str]
    template: str = Field(pattern=_NAME)
    otherwise: str | list[str] | None = None    # recipients when none of ``to`` can be reached

    @field_validator("to", "otherwise")
    @classmethod
    def _recipients(cls, to):
        for r in names(to):
            if r not in RECIPIENT_ROLES and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", r):
                raise ValueError(f"{r!r} is neither {' nor '.join(RECIPIENT_ROLES)} nor an email address")
        return to

    @property
    def recipients(self) -> tuple[str, ...]:
        return names(self.to)

    @property
    def fallback(self) -> tuple[str, ...]:
        return names(self.otherwise)


class TransitionAction(_Strict):
    """``transition: {to_state: open}``: through whichever transition leads to a status of that state."""

    to_state: str


class CommentAction(_Strict):
    """A JIRA comment rendered from ``templates/jira/<locale>/<template>.txt``."""

    template: str = Field(pattern=_NAME)


class NotifyAction(_Strict):
    """A JSON POST (``{"text": ...}``, as Slack, Teams and Google Chat webhooks take) to the URL in
    the environment variable ``url_env``: never a URL in the file, so secrets stay out of git."""

    url_env: str
    template: str = Field(pattern=_NAME)

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value):
        if not re.fullmatch(_ENV_NAME, value):
            raise ValueError(f"{value!r} is not an environment variable name (capitals, digits and _, "
                             "like CHAT_WEBHOOK_URL): the URL itself never goes in the file")
        return value


class Action(_Strict):
    """One step of a rule. Exactly one key is set."""

    email: EmailAction | None = None
    transition: Annotated[str, Field(min_length=1)] | TransitionAction | None = None
    raise_priority: int | None = Field(default=None, ge=1, le=4)
    set_priority: str | None = Field(default=None, min_length=1)
    add_label: str | None = Field(default=None, pattern=r"^\S+$")
    remove_label: str | None = Field(default=None, pattern=r"^\S+$")
    assign: str | None = Field(default=None, min_length=1)    # reporter | unassigned | an account id or username
    comment: Annotated[str, Field(min_length=1)] | CommentAction | None = None
    notify: NotifyAction | None = None

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an action has exactly one of {', '.join(type(self).model_fields)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def argument(self):
        return getattr(self, self.kind)

    @property
    def template(self) -> tuple[str, str] | None:
        """(folder, name) of the template this action renders, if any."""
        if self.email:
            return "emails", self.email.template
        if isinstance(self.comment, CommentAction):
            return "jira", self.comment.template
        if self.notify:
            return "chat", self.notify.template
        return None


class Repeat(_Strict):
    """``repeat: {every: 3d, times: 2}``: fire again every ``every`` while the rule's state holds."""

    every: Duration
    times: int = Field(ge=1, le=100)


class Rule(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)
    when: Trigger
    after: Duration | None = None
    repeat: Repeat | None = None
    calendar: str | None = None
    cancel_on: Trigger | None = None          # an event that cancels the rule's pending timer
    conditions: Conditions | None = Field(default=None, alias="if")
    do: list[Action] = Field(min_length=1)
    enabled: bool = True

    @model_validator(mode="after")
    def _timing(self):
        for field in ("repeat", "calendar", "cancel_on"):
            if getattr(self, field) is not None and self.after is None:
                raise _Located((field,), f"'{field}' needs 'after' (it is about the rule's timer)", relative=True)
        if self.when.email is not None and self.after is not None:
            raise _Located(("after",), "a rule on 'email: bounced' acts when SendGrid reports the bounce: "
                           "it takes no 'after'", relative=True)
        if self.cancel_on is not None and self.cancel_on.email is not None:
            raise _Located(("cancel_on",), "'cancel_on' takes a ticket event (entered, left, created, commented), "
                           "not 'email'", relative=True)
        return self

    @property
    def timed(self) -> bool:
        return self.after is not None


def _check_locale(value: str | None) -> str | None:
    if value is not None:
        try:
            Locale.parse(value.replace("-", "_"))
        except (ValueError, UnknownLocaleError):
            raise ValueError(f"unknown locale {value!r} (use en, fr, fr_FR, ...)") from None
    return value


def _check_time_zone(value: str | None) -> str | None:
    if value is not None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):    # OSError: a name too long for a file name
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/Paris)") from None
    return value


Locale_ = Annotated[str, AfterValidator(_check_locale)]
TimeZone = Annotated[str, AfterValidator(_check_time_zone)]


class Audience(_Strict):
    """Who reads the emails of a project, when their own JIRA profile does not say."""

    locale: Locale_ | None = None
    time_zone: TimeZone | None = None


class RuleSet(_Strict):
    """The validated rules file."""

    statuses: dict[str, list[str]]
    rules: list[Rule] = Field(default_factory=list)
    locale: Locale_ = "en"
    time_zone: TimeZone = "UTC"
    projects: dict[str, Audience] = Field(default_factory=dict)
    customers: list[str] = Field(default_factory=list)    # email domains (@acme.com) and JIRA groups of customers
    calendars: dict[str, CalendarSpec] = Field(default_factory=dict)

    @field_validator("customers")
    @classmethod
    def _domains(cls, customers):
        for entry in customers:
            if entry.startswith("@") and not re.fullmatch(r"@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", entry):
                raise ValueError(f"{entry!r} is not an email domain (write it like @acme.com)")
            if not entry.strip():
                raise ValueError("a customers entry is an email domain (@acme.com) or a JIRA group name")
        return [c.lower() if c.startswith("@") else c for c in customers]

    @property
    def customer_domains(self) -> tuple[str, ...]:
        return tuple(c for c in self.customers if c.startswith("@"))

    @property
    def customer_groups(self) -> tuple[str, ...]:
        return tuple(c for c in self.customers if not c.startswith("@"))

    def audience(self, project: str | None) -> tuple[str, str]:
        """(locale, time zone) for readers of ``project`` whose own are unknown."""
        override = self.projects.get(project or "") or Audience()
        return override.locale or self.locale, override.time_zone or self.time_zone

    def longest_delay(self) -> int:
        """Seconds of the longest chain of firings a rule's timer makes (0 without timed rules).

        A working-time delay is bounded in wall-clock time by how little the calendar opens:
        see ``_wall_clock_bound``.
        """
        cached = self.__dict__.get("_longest_delay")
        if cached is None:
            cached = max((_wall_clock_bound(r, self.calendar(r.calendar) if r.calendar else None)
                          for r in self.rules if r.after), default=0)
            object.__setattr__(self, "_longest_delay", cached)    # frozen model: cache by hand
        return cached

    def closes_after(self, state: str) -> int | None:
        """Seconds after entering ``state`` when a timed rule moves the ticket on (for "closes on" dates)."""
        return min((r.after for r in self.rules if r.enabled and r.after and r.when.kind == "entered"
                    and state in r.when.states and not r.calendar and any(a.transition for a in r.do)),
                   default=None)

    def reads_roles(self) -> bool:
        """True if a rule cares who made a change (``by``); comments are always read by author."""
        return any(t is not None and t.by != "anyone" for r in self.rules for t in (r.when, r.cancel_on))

    def comment_is_enough(self) -> bool:
        """True when a customer's comment on a ticket waiting for feedback moves it back by itself."""
        return any(r.enabled and r.when.commented == "customer" and any(a.transition for a in r.do)
                   and (not r.conditions or not r.conditions.state
                        or "waiting_for_feedback" in names(r.conditions.state))
                   for r in self.rules)

    @field_validator("statuses")
    @classmethod
    def _states(cls, statuses):
        unknown = [s for s in statuses if s not in LIFECYCLE_STATES]
        if unknown:
            raise ValueError(f"unknown lifecycle state {unknown[0]!r}; known: {', '.join(LIFECYCLE_STATES)}")
        seen = {}
        for state, names in statuses.items():
            for name in names:
                if name.casefold() in seen and seen[name.casefold()] != state:
                    raise ValueError(f"status {name!r} is mapped to both {seen[name.casefold()]} and {state}")
                seen[name.casefold()] = state
        return statuses

    @model_validator(mode="after")
    def _references(self):
        seen = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise _Located(("rules", i, "name"), f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
            for where_, trigger in (("when", rule.when), ("cancel_on", rule.cancel_on)):
                for state in trigger.states if trigger else ():
                    if state not in self.statuses:
                        raise _Located(("rules", i, where_), f"state {state!r} is not defined under 'statuses'")
            for state in names(rule.conditions.state) if rule.conditions else ():
                if state not in self.statuses:
                    raise _Located(("rules", i, "if", "state"), f"state {state!r} is not defined under 'statuses'")
            for j, action in enumerate(rule.do):
                if isinstance(action.transition, TransitionAction) and action.transition.to_state not in self.statuses:
                    raise _Located(("rules", i, "do", j, "transition", "to_state"),
                                   f"state {action.transition.to_state!r} is not defined under 'statuses'")
            if rule.calendar is not None and rule.calendar not in self.calendars:
                known = ", ".join(self.calendars) or "none defined"
                raise _Located(("rules", i, "calendar"), f"no calendar {rule.calendar!r} under 'calendars' ({known})")
        return self

    def state_of(self, status_name: str | None) -> str | None:
        """The lifecycle state a JIRA status name maps to (case-insensitive), or None."""
        if not status_name:
            return None
        return self._status_index.get(status_name.casefold())

    @property
    def _status_index(self) -> dict[str, str]:
        index = self.__dict__.get("_index_cache")
        if index is None:
            index = {n.casefold(): s for s, names in self.statuses.items() for n in names}
            object.__setattr__(self, "_index_cache", index)  # frozen model: cache by hand
        return index

    def calendar(self, name: str) -> Calendar | None:
        """The working-time calendar ``name`` (see workers/core/calendars.py), or None."""
        built = self.__dict__.setdefault("_calendar_cache", {})    # frozen model: cache by hand
        if name not in built and name in self.calendars:
            built[name] = self.calendars[name].build(name)
        return built.get(name)

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


def _wall_clock_bound(rule: Rule, calendar: Calendar | None) -> int:
    """Wall-clock seconds a rule's timer chain may take at most.

    In working time, the chain is measured on the calendar itself: the longest it
    takes from any hour of the coming two weeks, plus a day per holiday the
    calendar lists (a run of holidays can fall anywhere).
    """
    steps = [rule.after] + ([rule.repeat.every] * rule.repeat.times if rule.repeat else [])
    if calendar is None:
        return sum(steps)
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    longest = 0
    for hour in range(0, 14 * 24):
        begin = end = start + timedelta(hours=hour)
        for step in steps:
            end = calendar.add_duration(end, getattr(step, "text", int(step)))
        longest = max(longest, int((end - begin).total_seconds()))
    return longest + 86400 * len(calendar.holidays)


class _Located(ValueError):
    """A cross-field problem that knows which part of the file it is about: ``path`` from the
    file's top, or from the model that raised it when ``relative``."""

    def __init__(self, path, message, relative=False):
        super().__init__(message)
        self.path = path
        self.relative = relative


def parse_rules(text: str, source: str = "rules.yaml", templates_dir: Path | None = None) -> RuleSet:
    """Validate rules text; raise RulesError listing every problem with its line."""
    document = read_yaml(text, source)
    data = document.data
    if not isinstance(data, dict):
        raise RulesError(source, ["1: file: the rules file must be a mapping with 'statuses' and 'rules'"])
    try:
        ruleset = RuleSet.model_validate(data)
    except ValidationError as e:
        out = []
        for err in e.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "json-or")))]
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _Located):
                loc = (list(loc) if ctx_err.relative else []) + list(ctx_err.path)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc[-1]!r}"
            out.append(f"{document.line_of(loc)}: {where(loc)}: {msg}")
        raise RulesError(source, out) from None
    if templates_dir is not None:
        missing = []
        language = ruleset.locale.replace("-", "_").split("_")[0]
        for i, rule in enumerate(ruleset.rules):
            for j, action in enumerate(rule.do):
                if action.template is None:
                    continue
                folder, name = action.template
                path = Path(templates_dir) / folder / language / f"{name}.{'html' if folder == 'emails' else 'txt'}"
                if not path.is_file():
                    loc = ("rules", i, "do", j, action.kind, "template")
                    missing.append(f"{document.line_of(loc)}: {where(loc)}: no template {name!r} for locale "
                                   f"{ruleset.locale!r} (looked for {path.relative_to(templates_dir)} in {templates_dir})")
        if missing:
            raise RulesError(source, missing)
    return ruleset


def load_rules(path, templates_dir: Path | None = None) -> RuleSet:
    """Read and validate the rules file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RulesError(path, [f"1: file: cannot read: {e.strerror}"]) from None
    return parse_rules(text, str(path), templates_dir)
