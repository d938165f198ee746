"""Rendering emails from Jinja2 templates: ``templates/emails/<locale>/<name>.{subject,txt,html}``.

HTML parts extend ``emails/_layout.html``, whose ``<style>`` is inlined into
``style`` attributes after rendering (mail clients strip ``<style>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import css_inline
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_timedelta
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape

from .markup import wiki_html, wiki_plain, wiki_text

TEMPLATE_NAMES = ("ticket_received", "feedback_request", "feedback_reminder", "resolved_notice", "auto_closed",
                  "escalation", "support_silence", "customer_replied")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str
    locale: str


_LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")


def _one_line(text: str) -> str:
    """A header-safe subject: line breaks become spaces (no-break spaces stay, for French typography)."""
    return _LINE_BREAKS.sub(" ", text).strip()


class Formats:
    """Dates, times and durations for one locale and time zone (templates call ``fmt.date(...)``)."""

    def __init__(self, locale: str, time_zone: str | None):
        self.locale = locale
        try:
            self.tz = ZoneInfo(time_zone) if time_zone else timezone.utc
        except (ZoneInfoNotFoundError, ValueError):
            self.tz = timezone.utc

    def datetime(self, moment: datetime) -> str:
        """``28 novembre 2026 à 07:54 UTC+1``, ``November 28, 2026 at 1:54 AM EST``: no seconds."""
        loc = Locale.parse(self.locale)
        pattern = str(loc.datetime_formats["long"]).replace("{1}", loc.date_formats["long"].pattern) \
            .replace("{0}", loc.time_formats["short"].pattern)
        return format_datetime(moment, pattern + " z", tzinfo=self.tz, locale=self.locale)

    def date(self, moment: datetime) -> str:
        return format_date(moment.astimezone(self.tz), "long", locale=self.locale)

    def duration(self, span: timedelta) -> str:
        return format_timedelta(span, threshold=1.1, locale=self.locale)


def babel_locale(wanted: str | None, default: str) -> str:
    """A Babel locale id for ``wanted`` (JIRA says ``fr_FR``; ``fr-FR`` and ``fr`` work too)."""
    for candidate in (wanted, default, "en"):
        if not candidate:
            continue
        try:
            return str(Locale.parse(candidate.replace("-", "_")))
        except (ValueError, UnknownLocaleError):
            continue
    return "en"


def template_location(error: Exception) -> str | None:
    """``emails/fr/escalation.txt:12``: where in a template a rendering error happened, if known."""
    import traceback
    where = None
    for frame in traceback.extract_tb(error.__traceback__):
        if "/emails/" in frame.filename and not frame.filename.endswith(".py"):
            where = f"{frame.filename[frame.filename.index('emails/'):]}:{frame.lineno}"
    if where is None and getattr(error, "filename", None):
        where = f"{error.filename}:{error.lineno}"
    return where


class Renderer:
    """Renders a message in a locale, falling back to the default locale's templates.

    Undefined variables raise (StrictUndefined): no half-empty mail is sent.
    HTML is autoescaped; subjects lose their line breaks (no header injection).
    """

    def __init__(self, templates_dir: Path, default_locale: str = "en"):
        self.default_locale = default_locale
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["wiki_html"] = wiki_html
        self.env.filters["wiki_text"] = wiki_text
        self.env.filters["wiki_plain"] = wiki_plain
        self._inliner = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)

    def locales(self) -> list[str]:
        """Locales that have templates (folders under templates/emails)."""
        return sorted({t.split("/")[1] for t in self.env.list_templates() if t.count("/") == 2})

    def template_locale(self, name: str, wanted: str | None) -> str:
        """The template folder to use for ``name``: ``fr_FR`` -> ``fr``, else the default."""
        for candidate in (wanted, (wanted or "").replace("-", "_").split("_")[0]):
            if candidate and self._exists(f"emails/{candidate}/{name}.html"):
                return candidate
        return self.default_locale

    def _exists(self, path: str) -> bool:
        try:
            self.env.get_template(path)
        except TemplateNotFound:
            return False
        return True

    def render_text(self, folder: str, name: str, locale: str | None, context: dict,
                    time_zone: str | None = None) -> str:
        """Render ``<folder>/<locale>/<name>.txt`` (a JIRA comment, a chat message) for ``locale``,
        falling back to the default locale. Raises on unknown variables."""
        wanted = [c for c in (locale, (locale or "").replace("-", "_").split("_")[0]) if c]
        language = next((c for c in wanted if self._exists(f"{folder}/{c}/{name}.txt")), self.default_locale)
        context = {**context, "locale": language, "fmt": Formats(babel_locale(locale, language), time_zone)}
        return self.env.get_template(f"{folder}/{language}/{name}.txt").render(context).strip()

    def render(self, name: str, locale: str | None, context: dict, time_zone: str | None = None) -> RenderedEmail:
        """Render ``name`` for a reader of ``locale`` in ``time_zone``. Raises on unknown variables."""
        folder = self.template_locale(name, locale)
        babel = babel_locale(locale if folder == (locale or "").replace("-", "_").split("_")[0] else folder,
                             folder)
        context = {**context, "locale": folder, "fmt": Formats(babel, time_zone)}
        base = f"emails/{folder}/{name}"
        subject = self.env.get_template(f"{base}.subject").render(context)
        html = self.env.get_template(f"{base}.html").render(context)
        return RenderedEmail(
            subject=_one_line(subject),
            text=self.env.get_template(f"{base}.txt").render(context).strip() + "\n",
            html=self._inliner.inline(html),
            locale=folder,
        )
