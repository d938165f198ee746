"""Rendering emails from Jinja2 templates: ``templates/emails/<locale>/<name>.{subject,txt,html}``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class Renderer:
    """Renders a message in a locale, falling back to the default locale.

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
            keep_trailing_newline=False,
        )

    def locale_for(self, name: str, wanted: str | None) -> str:
        """The best locale we have ``name`` in: ``fr_FR`` -> ``fr``, else the default."""
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

    def render(self, name: str, locale: str | None, context: dict) -> RenderedEmail:
        loc = self.locale_for(name, locale)
        base = f"emails/{loc}/{name}"
        subject = self.env.get_template(f"{base}.subject").render(context)
        return RenderedEmail(
            subject=" ".join(subject.split()),
            text=self.env.get_template(f"{base}.txt").render(context).strip() + "\n",
            html=self.env.get_template(f"{base}.html").render(context),
        )
