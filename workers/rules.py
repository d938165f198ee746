"""The rules file: parsed, validated with line numbers, and turned into a RuleSet.

A bad file raises RulesError whose messages read ``<line>: <where>: <problem>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from .exceptions import RulesError
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


Duration = Annotated[int, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    """What starts a rule: the ticket entering or leaving a lifecycle state, or being created."""

    entered: str | None = None
    left: str | None = None
    created: Literal[True] | None = None

    @model_validator(mode="after")
    def _one(self):
        if sum(x is not None for x in (self.entered, self.left, self.created)) != 1:
            raise ValueError("give exactly one of 'entered', 'left' or 'created: true'")
        return self

    @property
    def kind(self) -> str:
        return "entered" if self.entered is not None else ("left" if self.left is not None else "created")

    @property
    def state(self) -> str | None:
        return self.entered if self.entered is not None else self.left


class EmailAction(_Strict):
    to: str | list[str]
    template: str = Field(pattern=r"^[a-z0-9_]+$")

    @field_validator("to")
    @classmethod
    def _recipients(cls, to):
        for r in [to] if isinstance(to, str) else to:
            if r not in RECIPIENT_ROLES and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", r):
                raise ValueError(f"{r!r} is neither {' nor '.join(RECIPIENT_ROLES)} nor an email address")
        return to

    @property
    def recipients(self) -> tuple[str, ...]:
        return (self.to,) if isinstance(self.to, str) else tuple(self.to)


class Action(_Strict):
    """One step of a rule. Exactly one key is set."""

    email: EmailAction | None = None
    transition: str | None = Field(default=None, min_length=1)
    raise_priority: int | None = Field(default=None, ge=1, le=4)
    add_label: str | None = Field(default=None, pattern=r"^\S+$")
    comment: str | None = Field(default=None, min_length=1)

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


class Rule(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)
    when: Trigger
    after: Duration | None = None
    do: list[Action] = Field(min_length=1)
    enabled: bool = True


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

    def audience(self, project: str | None) -> tuple[str, str]:
        """(locale, time zone) for readers of ``project`` whose own are unknown."""
        override = self.projects.get(project or "") or Audience()
        return override.locale or self.locale, override.time_zone or self.time_zone

    def longest_delay(self) -> int:
        """Seconds of the longest timer a rule arms (0 without timed rules)."""
        return max((r.after for r in self.rules if r.after), default=0)

    def closes_after(self, state: str) -> int | None:
        """Seconds after entering ``state`` when a timed rule moves the ticket on (for "closes on" dates)."""
        return min((r.after for r in self.rules if r.enabled and r.after and r.when.entered == state
                    and any(a.transition for a in r.do)), default=None)

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
        names = set()
        for i, rule in enumerate(self.rules):
            if rule.name in names:
                raise _Located(("rules", i, "name"), f"rule name {rule.name!r} is used twice")
            names.add(rule.name)
            if rule.when.state is not None and rule.when.state not in self.statuses:
                raise _Located(("rules", i, "when"), f"state {rule.when.state!r} is not defined under 'statuses'")
            if rule.after is not None and rule.when.kind != "entered":
                raise _Located(("rules", i, "after"), "'after' needs a rule 'when: {entered: ...}'")
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

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


class _Located(ValueError):
    """A cross-field problem that knows which part of the file it is about."""

    def __init__(self, path, message):
        super().__init__(message)
        self.path = path


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
                loc = list(ctx_err.path)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc[-1]!r}"
            out.append(f"{document.line_of(loc)}: {where(loc)}: {msg}")
        raise RulesError(source, out) from None
    if templates_dir is not None:
        missing = []
        for i, rule in enumerate(ruleset.rules):
            for j, action in enumerate(rule.do):
                if action.email and not (Path(templates_dir) / "emails" / ruleset.locale.replace("-", "_").split("_")[0]
                                         / f"{action.email.template}.html").is_file():
                    loc = ("rules", i, "do", j, "email", "template")
                    missing.append(f"{document.line_of(loc)}: {where(loc)}: no template "
                                   f"{action.email.template!r} for locale {ruleset.locale!r} in {templates_dir}")
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
