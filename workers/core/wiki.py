"""Customer text -> JIRA wiki markup that JIRA shows as typed. Pure: no I/O.

Two ways in: plain text (``wiki_of_text``: every character JIRA would read as
markup is escaped, line breaks and paragraphs kept) and HTML (``wiki_of_html``:
bold, italic, underline, strike-through, links, lists, quotes, code, tables and
line breaks become their wiki forms, all text escaped the same way; no HTML
ever passes through). HTML is walked by markdownify's converter, whose
``convert_<tag>`` hooks here write wiki markup instead of Markdown.

Escaping follows JIRA's renderer: a backslash makes any of ``-#*_+?^~|%{}[]()!@``
literal; ``\\\\`` is a forced line break; ``h1.``-``h6.`` and ``bq.`` start a
block at the start of a line; ``(y)``, ``:)`` and friends are emoticons. Bare
http(s) and mailto URLs are written as ``[url]`` links (escaping inside them
would break them).
"""

from __future__ import annotations

import re
from typing import Callable
from urllib.parse import quote

from bs4 import BeautifulSoup, CData, Comment, Declaration, Doctype, ProcessingInstruction, Tag
from markdownify import MarkdownConverter

_SPECIAL = set("-#*_+?^~|%{}[]!@")
_ZWSP = "\u200b"
# (y) (n) (i) (/) (x) (!) (+) (-) (?) (on) (off) (*) (*r) (*g) (*b) (*y) (flag) (flagoff)
_EMOTICON = re.compile(r"\((?:[yni/x!+\-?]|on|off|\*[rgby]?|flag|flagoff)\)", re.IGNORECASE)
_SMILEY = re.compile(r"(?<![\w:;])([:;])([()PpDd])(?!\w)")
_BLOCK_START = re.compile(r"^(\s*)(h[1-6]|bq)\.", re.MULTILINE)
_URL = re.compile(r"\b(?:https?://|mailto:)[^\s<>\"'\[\]|]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?)'\""


def _escape_plain(text: str) -> str:
    """Escape a run of text that holds no URL."""
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            # a literal backslash must not escape what follows nor make a \\ line break
            out.append("\\" + _ZWSP if nxt == "\\" or nxt in _SPECIAL or nxt in "()" else "\\")
        elif ch in _SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(ch)
    text = "".join(out)
    text = _EMOTICON.sub(lambda m: "\\(" + m.group(0)[1:], text)
    text = _SMILEY.sub(lambda m: m.group(1) + "\\" + m.group(2) if m.group(2) in "()" else m.group(1) + _ZWSP + m.group(2), text)
    return _BLOCK_START.sub(lambda m: m.group(1) + m.group(2) + _ZWSP + ".", text)


def _link_target(url: str) -> str:
    """A URL as a link target: what is not a URL character percent-encoded (``|`` and ``]``
    would end the link, ``<`` has no business there)."""
    return quote(url.strip(), safe=";/?:@&=+$,-_.!~*'()#%")


def _url_link(url: str) -> str:
    return "[" + _link_target(url) + "]"


def escape_wiki(text: str) -> str:
    """``text`` as JIRA wiki markup that renders as exactly that text (URLs as links)."""
    out, last = [], 0
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(_URL_TRAILING)
        if len(url) < len(m.group(0).split(":", 1)[0]) + 4:
            continue
        out.append(_escape_plain(text[last:m.start()]))
        out.append(_url_link(url))
        last = m.start() + len(url)
    out.append(_escape_plain(text[last:]))
    return "".join(out)


def tidy(wiki: str) -> str:
    """No trailing spaces, at most one blank line in a row, no blank lines at either end."""
    lines = [line.rstrip() for line in wiki.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def wiki_of_text(text: str, image: Callable[[str], str | None] | None = None) -> str:
    """Plain text as wiki markup: escaped, line breaks and paragraphs kept.

    ``image(placeholder)`` may turn a mail client's image placeholder
    (``[cid:...]``, ``[image: name]``) into wiki markup (an embed), or None to keep its text.
    """
    if not image:
        return tidy(escape_wiki(text))
    out, last = [], 0
    for m in re.finditer(r"\[(?:cid:[^\]\s]+|image: [^\]\n]+)\]", text):
        embed = image(m.group(0)[1:-1])
        if embed is None:
            continue
        out.append(escape_wiki(text[last:m.start()]))
        out.append(embed)
        last = m.end()
    out.append(escape_wiki(text[last:]))
    return tidy("".join(out))


def _list_marker(el: Tag) -> str:
    marks = []
    for parent in [el, *el.parents]:
        if isinstance(parent, Tag) and parent.name in ("ul", "ol"):
            marks.append("#" if parent.name == "ol" else "*")
    return "".join(reversed(marks)) or "*"


def _inline(mark: str):
    """Bold, italic...: ``*text*`` around the text, outer spaces kept outside (JIRA needs them there)."""
    def convert(self, el, text, parent_tags):
        if not text.strip():
            return text
        lead = text[: len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()):]
        inner = text.strip().replace("\n", " ")
        return f"{lead}{mark}{inner}{mark}{trail}"
    return convert


class _WikiConverter(MarkdownConverter):
    """markdownify's HTML walk, writing JIRA wiki markup."""

    def __init__(self, image: Callable[[Tag], str | None], **options):
        super().__init__(wrap=True, wrap_width=None, strip_document="strip", **options)
        self._image = image

    def escape(self, text, parent_tags):
        # a link's label is text, not a place for another link
        return (_escape_plain(text) if "a" in parent_tags else escape_wiki(text)) if text else ""

    convert_b = convert_strong = _inline("*")
    convert_i = convert_em = convert_cite = _inline("_")
    convert_u = convert_ins = _inline("+")
    convert_s = convert_del = convert_strike = _inline("-")
    convert_sub = _inline("~")
    convert_sup = _inline("^")

    def convert_code(self, el, text, parent_tags):
        if "pre" in parent_tags or not text.strip():
            return text
        return "{{" + escape_wiki(text.strip()) + "}}"

    convert_kbd = convert_samp = convert_tt = convert_code

    def convert_pre(self, el, text, parent_tags):
        body = el.get_text().strip("\n").replace("{noformat}", "{ noformat}")
        return f"\n\n{{noformat}}\n{body}\n{{noformat}}\n\n" if body.strip() else ""

    def convert_a(self, el, text, parent_tags):
        href = (el.get("href") or "").strip()
        label = text.strip().replace("\n", " ")
        if not re.match(r"(?:https?://|mailto:)", href, re.IGNORECASE):
            return text
        link = _link_target(href)
        if not label or label == _escape_plain(href) or label == _escape_plain(href.removeprefix("mailto:")):
            return f"[{link}]"
        return f"[{label}|{link}]"

    def convert_br(self, el, text, parent_tags):
        return " " if "_inline" in parent_tags else "\n"

    def convert_div(self, el, text, parent_tags):
        if "_inline" in parent_tags:
            return " " + text.strip() + " "
        if not text.strip():
            return "\n\n" if el.find("br") else ""
        return "\n" + text.strip() + "\n"

    convert_article = convert_section = convert_center = convert_div

    def convert_p(self, el, text, parent_tags):
        if "_inline" in parent_tags:
            return " " + text.strip() + " "
        return "\n\n" + text.strip() + "\n\n" if text.strip() else ""

    def convert_blockquote(self, el, text, parent_tags):
        return "\n\n{quote}\n" + text.strip() + "\n{quote}\n\n" if text.strip() else ""

    def convert_hN(self, n, el, text, parent_tags):
        if "_inline" in parent_tags:
            return text
        return f"\n\nh{max(1, min(6, n))}. {text.strip()}\n\n" if text.strip() else ""

    def convert_hr(self, el, text, parent_tags):
        return "\n\n----\n\n"

    def convert_img(self, el, text, parent_tags):
        return self._image(el) or ""

    def convert_list(self, el, text, parent_tags):
        return "\n" + text.strip("\n") + "\n" if "li" in parent_tags else "\n\n" + text.strip("\n") + "\n\n"

    convert_ul = convert_ol = convert_list

    def convert_li(self, el, text, parent_tags):
        lines = [line for line in text.strip().split("\n") if line.strip()]
        if not lines:
            return ""
        marker = _list_marker(el)
        first, rest = lines[0], lines[1:]
        # an item is one wiki line: its own line breaks become \\, nested items keep their lines
        out = [f"{marker} {first}"]
        for line in rest:
            if re.match(r"[*#]+ ", line):
                out.append(line)
            else:
                out[-1] += " \\\\ " + line
        return "\n".join(out) + "\n"

    def convert_td(self, el, text, parent_tags):
        return "|" + (text.strip().replace("\n", " ") or " ")

    def convert_th(self, el, text, parent_tags):
        return "||" + (text.strip().replace("\n", " ") or " ")

    def convert_tr(self, el, text, parent_tags):
        if not text.strip("| "):
            return ""
        return text + ("||" if text.startswith("||") else "|") + "\n"

    def convert_table(self, el, text, parent_tags):
        return "\n\n" + text.strip("\n") + "\n\n" if text.strip() else ""

    def convert_q(self, el, text, parent_tags):
        return "\u201c" + text + "\u201d"

    def convert_title(self, el, text, parent_tags):
        return ""

    convert_style = convert_script = convert_head = convert_title


def wiki_of_html(html: str | BeautifulSoup, image: Callable[[Tag], str | None] | None = None) -> str:
    """HTML as wiki markup; ``image(img_tag)`` gives an image's markup, or None to drop it
    (the default: every image is dropped)."""
    soup = html if isinstance(html, BeautifulSoup) else BeautifulSoup(html, "html.parser")
    for node in soup.find_all(string=lambda s: isinstance(s, (Comment, CData, Declaration, Doctype, ProcessingInstruction))):
        node.extract()
    return tidy(_WikiConverter(image or (lambda el: None)).convert_soup(soup))
