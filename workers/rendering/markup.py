"""JIRA wiki markup in comments -> readable text and safe HTML.

JIRA's webhooks and REST API v2 give comment bodies in wiki markup (``*bold*``,
``{code}``, ``[text|url]``, ``[~accountid:...]``). jira2markdown turns it into
Markdown, which reads well as plain text; markdown-it renders that to HTML with
raw HTML disabled, so anything a customer typed is escaped, never interpreted.
"""

from __future__ import annotations

from functools import lru_cache

from jira2markdown.elements import MarkupElements
from jira2markdown.parser import convert  # noqa: F401  (sets pyparsing's whitespace defaults first)
from markdown_it import MarkdownIt
from pyparsing import Forward
from markupsafe import Markup, escape


def _image_as_text(self, tokens, idx, options, env):
    # Attachments are not reachable from a mail client: name them instead.
    return f"[{escape(tokens[idx].content or tokens[idx].attrGet('src') or 'image')}]"


@lru_cache(maxsize=1)
def _wiki_grammar():
    """jira2markdown's grammar, built once: ``convert()`` builds it on every call (~0.3 s)."""
    elements = MarkupElements()
    inline_markup, markup = Forward(), Forward()
    inline_markup << elements.expr(inline_markup, markup, {}, filter(lambda e: e.is_inline_element, elements))
    markup << elements.expr(inline_markup, markup, {}, elements)
    return markup


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _image_as_text)
    return md


@lru_cache(maxsize=256)      # a body is rendered twice per email (text and HTML); parsing costs ~50 ms
def wiki_text(wiki: str | None) -> str:
    """Readable plain text (Markdown) for a wiki-markup body."""
    if not wiki:
        return ""
    return _wiki_grammar().transform_string(wiki).strip()


def wiki_html(wiki: str | None) -> Markup:
    """Safe HTML for a wiki-markup body: raw HTML escaped, only http(s)/mailto links kept."""
    if not wiki:
        return Markup("")
    return Markup(_markdown().render(wiki_text(wiki)))


_WIKI_ACTIVE = str.maketrans({c: "\\" + c for c in "[]{}|!"})


def wiki_plain(text: str | None) -> str:
    """``text`` from outside (a mail server's reply) made inert in a JIRA comment: the characters that
    open links, mentions, macros, tables and images are escaped, so it prints as written."""
    return (text or "").translate(_WIKI_ACTIVE)
