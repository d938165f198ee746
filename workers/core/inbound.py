"""SendGrid Inbound Parse posts -> the customer's reply, ready for JIRA. Pure: no I/O.

SendGrid posts each mail received at the reply domain as ``multipart/form-data``
(boundary ``xYzZY``), in one of two modes:

- default: the mail already taken apart: ``headers`` (the header block), ``text``,
  ``html``, ``from``/``to``/``cc``/``subject``, each text field in its own charset
  (``charsets`` JSON), file parts ``attachment1..N`` described by ``attachment-info``
  and ``content-ids`` (JSON);
- raw (``send_raw``): the whole MIME message in ``email``.

Both carry ``envelope`` (JSON: SMTP ``from`` and ``to``), ``SPF`` and ``dkim``
(SendGrid's verdicts). ``parse_inbound`` reads either into an ``InboundMail``;
``reply_of`` keeps the customer's new words as JIRA wiki markup;
``auto_reply_reason`` and ``authentication_problem`` say why a mail should not
become a comment.

The multipart body is read by Werkzeug's sans-IO decoder in 64 KiB steps, so a
30 MB post costs the body plus its parts, not several copies of it.
"""

from __future__ import annotations

import codecs
import json
import mimetypes
import re
from dataclasses import dataclass
from datetime import timezone
from email import message_from_bytes
from email.header import Header, decode_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from functools import lru_cache

from bs4 import BeautifulSoup, Tag
from mailparser_reply.constants import MAIL_LANGUAGES
from mailparser_reply.parser import EmailMessage
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from ..exceptions import InboundError
from .wiki import _escape_plain, tidy, wiki_of_html, wiki_of_text

DEFAULT, RAW = "default", "raw"
REPLY_LANGUAGES = ("en", "fr")      # the languages relance writes its emails in


@dataclass(frozen=True)
class Attachment:
    filename: str            # safe: no path components (Windows paths too), never empty, unique in its mail
    content_type: str        # the bare MIME type, lower case ("image/png")
    data: bytes
    inline: bool = False     # referenced by cid: in the html (e.g. an Outlook signature logo)
    content_id: str | None = None


@dataclass(frozen=True)
class InboundMail:
    mode: str                        # "default" | "raw"
    sender: str                      # the From address (lower-cased addr-spec), "" if none
    sender_name: str                 # display name, RFC 2047 decoded, may be ""
    envelope_from: str | None        # SMTP MAIL FROM; "" for a null sender (bounces), None if not told
    envelope_to: tuple[str, ...]     # from the `envelope` JSON
    to: tuple[str, ...]              # addresses of the To header field, lower case
    cc: tuple[str, ...]
    subject: str
    message_id: str | None
    in_reply_to: str | None
    date_ms: int | None              # the Date header, epoch ms
    headers: Message                 # the mail's own header fields (case-insensitive; raw mode: the whole message)
    text: str                        # whole plain text, decoded, line breaks as \n
    html: str                        # whole html, decoded, line breaks as \n
    attachments: tuple[Attachment, ...]
    spf: str | None                  # SendGrid's SPF verdict (pass, fail, softfail, neutral, none, permerror...)
    dkim: dict[str, str]             # {"example.org": "pass"}; {} when no signature was checked

    def header(self, name: str) -> str | None:
        """A header field of the mail, RFC 2047 decoded and unfolded, or None."""
        value = self.headers.get(name)
        return None if value is None else " ".join(_header_text(value).split())


# --- reading the post ----------------------------------------------------------------------------

_CHUNK = 1 << 16
_CHARSET_ALIASES = {"ks_c_5601-1987": "cp949", "gb2312": "gb18030", "x-gbk": "gbk", "iso-8859-8-i": "iso-8859-8"}


class _Decoder(MultipartDecoder):
    def _parse_headers(self, data):
        # Werkzeug reads part headers as strict UTF-8; a filename in another charset must not lose the mail
        try:
            return super()._parse_headers(data)
        except UnicodeDecodeError:
            return super()._parse_headers(bytes(data).decode("latin-1").encode("utf-8"))


def _form(content_type: str, body: bytes) -> tuple[dict[str, bytes], list[tuple[File, bytes]]]:
    """The text fields (first value of each name) and the file parts of a multipart/form-data body."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data":
        raise InboundError(f"an Inbound Parse post is multipart/form-data, not {mimetype or 'untyped'!r}")
    boundary = options.get("boundary", "")
    if not boundary or not boundary.isascii():
        raise InboundError("the multipart/form-data Content-Type has no boundary")
    decoder = _Decoder(boundary.encode("ascii"))
    view, position = memoryview(body), 0
    fields: dict[str, bytes] = {}
    files: list[tuple[File, bytes]] = []
    part, chunks = None, []
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                decoder.receive_data(view[position:position + _CHUNK] if position < len(body) else None)
                position += _CHUNK
            elif isinstance(event, (Field, File)):
                part, chunks = event, []
            elif isinstance(event, Data):
                chunks.append(event.data)
                if not event.more_data:
                    data = b"".join(chunks)
                    chunks = []
                    if isinstance(part, File):
                        files.append((part, data))
                    elif part is not None and part.name:
                        fields.setdefault(part.name, data)
            elif isinstance(event, Epilogue):
                break
    except Exception as exc:   # Werkzeug raises ValueError, or worse on some garbage: all mean "unreadable"
        raise InboundError(f"the body is not a readable multipart/form-data post ({exc})") from None
    finally:
        view.release()
    return fields, files


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _decode(data: bytes, charset: str | None) -> str:
    """``data`` decoded with its declared charset, else UTF-8, else Windows-1252 (what mislabelled
    mail usually is); never fails."""
    declared = _codec(charset)
    for codec in dict.fromkeys(c for c in (declared, "utf-8") if c):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    return data.decode(declared or "windows-1252", errors="replace")


def _json(fields: dict[str, bytes], name: str) -> object:
    try:
        return json.loads(fields[name].decode("utf-8", errors="replace")) if name in fields else None
    except ValueError:
        return None


def _header_text(value) -> str:
    """A header value as text: RFC 2047 encoded words decoded, 8-bit bytes read as UTF-8 (else Windows-1252)."""
    if value is None:
        return ""
    if isinstance(value, Header):     # compat32's form of a field with 8-bit bytes
        text = "".join(piece if isinstance(piece, str) else _decode(piece, None if charset == "unknown-8bit" else charset)
                       for piece, charset in decode_header(value))
        return _header_text(text) if "=?" in text else text
    try:
        pieces = decode_header(str(value))
    except Exception:   # a broken encoded word: show it as it came
        return str(value)
    out = []
    for piece, charset in pieces:
        if isinstance(piece, str):
            out.append(piece)
        elif charset is None:     # decode_header's own encoding of the text between encoded words
            out.append(piece.decode("raw-unicode-escape"))
        else:
            out.append(_decode(piece, None if charset == "unknown-8bit" else charset))
    return "".join(out)


def _addresses(values) -> list[tuple[str, str]]:
    """(display name, lower-case address) of every address in the given header values."""
    raw = [str(v) if not isinstance(v, Header) else _header_text(v) for v in values if v]
    return [(" ".join(_header_text(name).split()), addr.strip().lower())
            for name, addr in getaddresses(raw) if addr.strip()]


_MIME = mimetypes.MimeTypes(filenames=())   # the built-in table only: the same on every machine
_WINDOWS_RESERVED = re.compile(r"(?i)^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$")


def safe_filename(name: str | None, content_type: str = "application/octet-stream") -> str:
    """A file name safe to store anywhere: the last path component (``/`` or ``\\``), no control
    or Windows-reserved characters, no leading dots, at most 180 characters, never empty."""
    name = re.split(r"[/\\]", name or "")[-1]
    name = re.sub(r'[\x00-\x1f\x7f<>:"|?*]', "_", name).strip().lstrip(".").strip()
    if _WINDOWS_RESERVED.match(name):
        name = "_" + name
    if len(name) > 180:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 180 - len(ext) - 1] + "." + ext) if dot and len(ext) <= 16 else name[:180]
    if not name:
        name = "attachment" + (_MIME.guess_extension(content_type) or "")
    return name


def _unique(names: list[str]) -> list[str]:
    seen, out = set(), []
    for name in names:
        candidate, n = name, 1
        while candidate.lower() in seen:
            n += 1
            stem, dot, ext = name.rpartition(".")
            candidate = f"{stem} ({n}).{ext}" if dot and stem else f"{name} ({n})"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def _bare_type(content_type: str | None) -> str:
    mimetype = parse_options_header(content_type or "")[0].lower()
    return mimetype if "/" in mimetype else "application/octet-stream"


def _cid(value) -> str | None:
    cid = _header_text(value).strip().strip("<>").strip() if value else ""
    return cid or None


@dataclass
class _Body:
    text: list[str]
    html: list[str]
    files: list[tuple[str | None, str, bytes, str | None]]    # (filename, type, data, content id)


def _message_bytes(part: Message) -> bytes:
    payload = part.get_payload()
    if not isinstance(payload, list):
        return part.get_payload(decode=True) or b""
    try:
        return b"".join(m.as_bytes() for m in payload)
    except Exception:     # a forwarded message too broken to write back: keep its text rather than lose the mail
        return "".join(str(m) for m in payload).encode("utf-8", "surrogateescape")


def _walk(part: Message, body: _Body) -> None:
    """Collect the text, html and attachments of a raw MIME part (a forwarded message is one attachment)."""
    ctype = part.get_content_type()
    filename = part.get_filename()
    filename = _header_text(filename) if filename else None
    if ctype.startswith("message/"):
        if ctype in ("message/rfc822", "message/global") and not filename:
            inner = part.get_payload()
            subject = inner[0].get("Subject") if isinstance(inner, list) and inner else None
            filename = (_header_text(subject).strip() or "forwarded message") + ".eml"
        body.files.append((filename, ctype, _message_bytes(part), _cid(part.get("Content-ID"))))
        return
    if part.is_multipart():
        for sub in part.get_payload():
            _walk(sub, body)
        return
    disposition = part.get_content_disposition()
    data = part.get_payload(decode=True) or b""
    if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
        (body.text if ctype == "text/plain" else body.html).append(_decode(data, part.get_content_charset()))
    else:
        body.files.append((filename, ctype, data, _cid(part.get("Content-ID"))))


def _default_files(fields: dict[str, bytes], files: list[tuple[File, bytes]]):
    """(filename, type, data, content id) of the file parts, in attachment order."""
    info = _json(fields, "attachment-info")
    info = info if isinstance(info, dict) else {}
    content_ids = _json(fields, "content-ids")
    cid_of = {str(v): str(k) for k, v in content_ids.items()} if isinstance(content_ids, dict) else {}

    def order(item):
        m = re.fullmatch(r"attachment(\d+)", item[0].name or "")
        return (0, int(m.group(1))) if m else (1, 0)

    out = []
    for part, data in sorted(files, key=order):
        meta = info.get(part.name) if isinstance(info.get(part.name), dict) else {}
        out.append((meta.get("filename") or meta.get("name") or part.filename,
                    meta.get("type") or part.headers.get("Content-Type"),
                    data, meta.get("content-id") or cid_of.get(part.name or "")))
    return out


def _dkim(value: str) -> dict[str, str]:
    """SendGrid's ``{@a.example : pass, @b.example : fail}`` (or ``none``) as {domain: result}."""
    results: dict[str, str] = {}
    for domain, result in re.findall(r"@([^\s:,{}]+)\s*:\s*([A-Za-z]+)", value or ""):
        domain, result = domain.lower(), result.lower()
        if results.get(domain) != "pass":     # one passing signature of a domain is enough
            results[domain] = result
    return results


def _date_ms(value) -> int | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(_header_text(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:     # "-0000": the time is UTC, its zone unknown
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _message_id(value) -> str | None:
    text = " ".join(_header_text(value).split()) if value else ""
    return text or None


def parse_inbound(content_type: str, body: bytes) -> InboundMail:
    """The mail in a SendGrid Inbound Parse post (default or raw mode).

    ``content_type`` is the request's Content-Type header (it holds the boundary).
    Raises InboundError, saying why, for anything else: another content type, a
    body that is not multipart/form-data, or a form without the fields SendGrid
    always sends (``email`` in raw mode; ``headers`` or ``envelope`` otherwise).
    """
    fields, files = _form(content_type, body)
    if not ({"email", "headers", "envelope"} & fields.keys()):
        raise InboundError("not an Inbound Parse post: it has none of the fields email, headers or envelope")
    charsets = _json(fields, "charsets")
    charsets = {str(k).lower(): str(v) for k, v in charsets.items()} if isinstance(charsets, dict) else {}

    def field(name: str) -> str | None:
        return _decode(fields[name], charsets.get(name)) if name in fields else None

    if "email" in fields:
        mode = RAW
        headers = message_from_bytes(fields.pop("email"), policy=compat32)
        parts = _Body([], [], [])
        _walk(headers, parts)
        text, html, found = "\n".join(parts.text), "\n".join(parts.html), parts.files
    else:
        mode = DEFAULT
        headers = HeaderParser(policy=compat32).parsestr(_decode(fields.get("headers", b""), "utf-8"))
        text, html = field("text") or "", field("html") or ""
        found = _default_files(fields, files)

    envelope = _json(fields, "envelope")
    if "envelope" in fields and not isinstance(envelope, dict):
        raise InboundError("not an Inbound Parse post: its envelope field is not a JSON object")
    envelope = envelope or {}
    envelope_from = envelope.get("from")
    envelope_to = envelope.get("to") or []
    envelope_to = [envelope_to] if isinstance(envelope_to, str) else envelope_to

    senders = _addresses(headers.get_all("From") or []) or _addresses([field("from")])
    to = _addresses(headers.get_all("To") or []) or _addresses([field("to")])
    cc = _addresses(headers.get_all("Cc") or []) or _addresses([field("cc")])
    subject = _header_text(headers.get("Subject"))
    if (not subject or "\ufffd" in subject) and "subject" in fields:   # SendGrid's field knows its charset
        subject = field("subject")

    names = _unique([safe_filename(_header_text(name) if name else None, _bare_type(ctype))
                     for name, ctype, _, _ in found])
    referenced = (html + "\n" + text).lower()
    attachments = tuple(
        Attachment(filename=name, content_type=_bare_type(ctype), data=data, content_id=cid,
                   inline=bool(cid) and (f"cid:{cid}".lower() in referenced))
        for name, (_, ctype, data, cid) in zip(names, found))

    spf = (field("SPF") or "").strip().lower() or None
    return InboundMail(
        mode=mode,
        sender=senders[0][1] if senders else "",
        sender_name=senders[0][0] if senders else "",
        envelope_from=None if envelope_from is None else str(envelope_from).strip().strip("<>").lower(),
        envelope_to=tuple(str(a).strip().lower() for a in envelope_to if a),
        to=tuple(addr for _, addr in to),
        cc=tuple(addr for _, addr in cc),
        subject=" ".join(subject.split()),
        message_id=_message_id(headers.get("Message-ID")),
        in_reply_to=_message_id(headers.get("In-Reply-To")),
        date_ms=_date_ms(headers.get("Date")),
        headers=headers,
        text=_lf(text),
        html=_lf(html),
        attachments=attachments,
        spf=spf,
        dkim=_dkim(field("dkim") or ""),
    )


# --- is it a person's reply? ---------------------------------------------------------------------

_BULK = {"bulk", "junk", "list", "auto_reply"}
_DAEMONS = {"mailer-daemon", "postmaster"}
_REPORTS = {"message/delivery-status": "a delivery status report (bounce)",
            "message/disposition-notification": "a read receipt (disposition notification)",
            "message/feedback-report": "a spam complaint report"}


def auto_reply_reason(mail: InboundMail) -> str | None:
    """Why ``mail`` was sent by a machine rather than written by a person, or None.

    Automatic: Auto-Submitted other than ``no`` (RFC 3834: out-of-office,
    auto-generated), X-Autoreply / X-Autorespond, Precedence bulk, junk, list or
    auto_reply, an empty Return-Path or SMTP sender (``<>``: bounces), a
    delivery, disposition or feedback report (multipart/report, message/delivery-status),
    a From of MAILER-DAEMON or postmaster, X-Failed-Recipients, and mail sent
    through a mailing list (List-Id, List-Unsubscribe). Only the mail's own
    header fields count, never those of a message forwarded inside it.
    """
    auto = mail.header("Auto-Submitted")
    if auto and auto.split(";")[0].strip().lower() != "no":
        return f"an automatic message (Auto-Submitted: {auto[:60]})"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if mail.header(name) is not None:
            return f"an automatic reply ({name})"
    precedence = (mail.header("Precedence") or "").lower()
    if precedence in _BULK:
        return f"an automatic message (Precedence: {precedence})"
    content_type = mail.headers.get_content_type()
    if content_type == "multipart/report":
        report = (mail.headers.get_param("report-type") or "").lower()
        return _REPORTS.get(f"message/{report}", f"an automatic report (multipart/report; report-type={report or '?'})")
    for attachment in mail.attachments:
        if attachment.content_type in _REPORTS:
            return _REPORTS[attachment.content_type]
    if mail.header("X-Failed-Recipients") is not None:
        return "a delivery failure report (X-Failed-Recipients)"
    if (mail.header("Return-Path") or "").replace(" ", "") == "<>" or mail.envelope_from in ("",):
        return "a bounce (empty sender <>)"
    if mail.sender.partition("@")[0] in _DAEMONS:
        return f"a message from {mail.sender}"
    for name in ("List-Id", "List-Unsubscribe"):
        if mail.header(name):
            return f"a mailing list message ({name})"
    return None


def authentication_problem(mail: InboundMail) -> str | None:
    """Why SendGrid's checks say ``mail`` was forged, or None.

    Policy: refuse when SPF is ``fail`` (the sending server is not allowed to send
    for the envelope sender's domain), or when DKIM signatures were checked and
    every one of them is ``fail``. Everything else is accepted: SPF softfail,
    neutral, none, temperror and permerror (a reply forwarded by Gmail gets
    permerror), no SPF verdict at all, no DKIM signature, and any mix of DKIM
    results with one that is not ``fail``. The reply address's own signature
    (workers/core/replies.py) is what proves which ticket and customer a reply
    belongs to; these checks only keep out mail whose sender is provably forged.
    """
    if mail.spf == "fail":
        domain = (mail.envelope_from or mail.sender).rpartition("@")[2] or "?"
        return f"SPF failed: the sending server may not send mail for {domain}"
    if mail.dkim and all(result == "fail" for result in mail.dkim.values()):
        return "DKIM failed: no signature of " + ", ".join(sorted(mail.dkim)) + " verified"
    return None


# --- the customer's new words --------------------------------------------------------------------

_QUOTED = re.compile(r"^\s*>")
_QUOTE_MARKS = re.compile(r"^\s*(?:> ?)+")
_FORWARD = re.compile(
    r"^(?:-{3,}\s*(?:Forwarded message|Message transf[ée]r[ée]|Mensaje reenviado|Weitergeleitete Nachricht)\s*-{3,}"
    r"|Begin forwarded message\s?:|D[ée]but du message (?:r[ée]exp[ée]di[ée]|transf[ée]r[ée])\s?:)$", re.IGNORECASE)
_SEPARATOR = re.compile(
    r"^-{3,}\s*(?:Original Message|Message d'origine|Message original|Mensaje original|Urspr[üu]ngliche Nachricht)"
    r"\s*-{3,}$", re.IGNORECASE)
# Gmail and Apple Mail wrap a long "On ... wrote:" / "Le ... a écrit :" over two or three lines
_ATTRIBUTION = re.compile(r"^(?:On|Le)\s.{4,300}?\s(?:wrote|a\s+[ée]crit)\s?:$", re.IGNORECASE | re.DOTALL)
_HEADER_LINE = re.compile(r"^[* ]*(?:From|De|Von|Van|Da)\s?:", re.IGNORECASE)
_RULE = re.compile(r"^(?:[-_=*~]\s*){4,}$")
_SENT_FROM_MORE = r"Envoy[ée] de mon|Envoy[ée] depuis|T[ée]l[ée]charger Outlook pour|Obtenir Outlook pour"
_OPAQUE = "\x00"       # view of a line inside a {noformat} or {quote} block: never history


@lru_cache(maxsize=16)
def _patterns(languages: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern]:
    """mail-parser-reply's reply-header regex for ``languages`` (English always), and a regex of
    the mobile trailers ("Sent from my iPhone") of those languages."""
    message = EmailMessage(text="", languages=list(languages))
    sent_from = [MAIL_LANGUAGES[lang].get("sent_from") for lang in message.languages if lang in MAIL_LANGUAGES]
    sent_from = "|".join([s for s in sent_from if s] + [_SENT_FROM_MORE])
    return message.HEADER_REGEX, re.compile(rf"^(?:{sent_from})\b", re.IGNORECASE)


def _history_start(view: list[str], languages: tuple[str, ...]) -> tuple[int, int]:
    """(the line where the quoted history starts, the line where a forwarded message starts),
    len(view) for none."""
    n = len(view)
    forward = next((i for i, line in enumerate(view) if _FORWARD.match(line)), n)
    starts = []
    header_regex, _ = _patterns(languages)
    # quoted lines are history already; and the library's patterns are quadratic in a line's
    # length: a header line is short, so each line is searched up to 500 characters
    joined = "\n".join("" if _QUOTED.match(line) else line[:500] for line in view)
    m = header_regex.search(joined)
    if m:
        start = m.start() + len(m.group(0)) - len(m.group(0).lstrip("\n"))
        starts.append(joined.count("\n", 0, start))
    for i, line in enumerate(view):
        if _SEPARATOR.match(line):
            starts.append(i)
            break
        if re.match(r"^(?:On|Le)\s", line, re.IGNORECASE) and any(
                _ATTRIBUTION.match(" ".join(view[i:i + k])) for k in (1, 2, 3) if all(view[i:i + k])):
            starts.append(i)
            break
        if re.fullmatch(r"_{10,}", line) and _HEADER_LINE.match(next((v for v in view[i + 1:] if v), "")):
            starts.append(i)
            break
    return min(starts, default=n), forward


def _signature_start(view: list[str], end: int, languages: tuple[str, ...]) -> int:
    """Where a signature starts before ``end``: an RFC 3676 "-- " line, or a mobile trailer
    ("Sent from my iPhone", "Envoyé de mon iPhone") among the last three lines."""
    for i in range(end):
        if view[i] == "--":
            return i
    _, sent_from = _patterns(languages)
    last = [i for i in range(end) if view[i]][-3:]
    return next((i for i in last if sent_from.match(view[i])), end)


def _trim(keep: list[int], view: list[str]) -> list[int]:
    while keep and (not view[keep[-1]] or _QUOTED.match(view[keep[-1]]) or _RULE.match(view[keep[-1]])):
        keep.pop()
    return keep


def _segments(lines: list[str], view: list[str], languages: tuple[str, ...],
              signature: list[str] = ()) -> list[tuple[bool, list[str]]]:
    """The new words as (quoted, lines) blocks: history, signature and trailing quotes cut,
    a forwarded message kept; ``view`` holds each line as text to recognise (stripped).
    ``signature``: the lines of a signature known from elsewhere (the html part), cut
    when the new words end with them."""
    history, forward = _history_start(view, languages)
    words_end = len(_trim([*range(min(history, forward))], view))     # trailing quotes are history too
    keep = [*range(_signature_start(view, words_end, languages))]
    if forward < history:     # a forwarded message is what the customer sends: keep it whole
        keep += range(forward, len(view))
    keep = _trim(keep, view)
    written = [i for i in keep if view[i]]
    if signature and len(written) > len(signature) and \
            [" ".join(view[i].split()) for i in written[-len(signature):]] == list(signature):
        keep = _trim([i for i in keep if i < written[-len(signature)]], view)
    blocks: list[tuple[bool, list[str]]] = []
    for line, seen in ((lines[i], view[i]) for i in keep):
        quoted = bool(_QUOTED.match(seen)) if seen else (blocks[-1][0] if blocks else False)
        if quoted:
            line = _QUOTE_MARKS.sub("", line)
        if blocks and blocks[-1][0] == quoted:
            blocks[-1][1].append(line)
        else:
            blocks.append((quoted, [line]))
    return [(quoted, block) for quoted, block in blocks if any(line.strip() for line in block)]


# HTML: elements that hold quoted history or a signature, removed before conversion
_HISTORY_CLASSES = {"gmail_quote", "gmail_quote_container", "gmail_signature", "gmail_signature_prefix",
                    "moz-cite-prefix", "moz-signature", "yahoo_quoted", "protonmail_quote", "zmail_extra"}
_HISTORY_IDS = {"signature"}
# ... and those where the history starts: they go with everything after them
_CUT_IDS = {"divrplyfwdmsg", "x_divrplyfwdmsg", "appendonsend", "mail-editor-reference-message-container"}
_CUT_CLASSES = {"outlookmessageheader"}
_OUTLOOK_HEADER_BOX = re.compile(r"border-top:\s*solid", re.IGNORECASE)


def _cut_from(node: Tag) -> None:
    """Remove ``node`` and everything after it in the document."""
    current = node
    while current is not None and current.name not in ("body", "html", "[document]"):
        for sibling in list(current.next_siblings):
            sibling.extract()
        current = current.parent
    node.extract()


def _has_text_after(node: Tag) -> bool:
    current = node
    while current is not None and current.name != "[document]":
        for sibling in current.next_siblings:
            if isinstance(sibling, Tag) and (sibling.get_text(strip=True) or sibling.find("img")):
                return True
            if not isinstance(sibling, Tag) and str(sibling).strip():
                return True
        current = current.parent
    return False


def _without_history(html: str) -> BeautifulSoup:
    """The html's document with quoted history, signatures and trailing quotes removed."""
    soup = BeautifulSoup(html, "html.parser")
    for node in soup.find_all(["head", "style", "script", "title"]):
        node.decompose()
    for node in soup.find_all(string=lambda s: type(s).__name__ in ("Comment", "Declaration", "Doctype")):
        node.extract()
    for el in soup.find_all(True):
        if el.parent is None:
            continue
        ident = str(el.get("id") or "").lower()
        classes = {str(c).lower() for c in el.get("class") or ()}
        if ident in _CUT_IDS or classes & _CUT_CLASSES or (
                el.name == "div" and _OUTLOOK_HEADER_BOX.search(str(el.get("style") or ""))
                and _HEADER_LINE.match(el.get_text(" ", strip=True))):
            _cut_from(el)
            break
    for el in soup.find_all(True):
        if el.parent is None or el.decomposed:
            continue
        classes = {str(c) for c in el.get("class") or ()}
        if classes & _HISTORY_CLASSES or str(el.get("id") or "").lower() in _HISTORY_IDS \
                or (el.name == "blockquote" and (el.get("type") == "cite" or not _has_text_after(el))):
            first = next((_view(line) for line in el.get_text("\n").split("\n") if _view(line)), "")
            if not _FORWARD.match(first):     # Gmail puts a forwarded message in a gmail_quote too
                el.decompose()
    return soup


class _Embeds:
    """Wiki markup for the images a reply shows: ``!name!`` for an image attached to the mail."""

    def __init__(self, mail: InboundMail):
        self.by_cid = {a.content_id.lower(): a for a in mail.attachments if a.content_id}
        self.by_name = {a.filename.lower(): a for a in mail.attachments}

    @staticmethod
    def markup(attachment: Attachment) -> str:
        if attachment.content_type.startswith("image/") and not set("!|[]\n") & set(attachment.filename):
            return f"!{attachment.filename}!"
        if not set("|[]\n") & set(attachment.filename):
            return f"[^{attachment.filename}]"
        return _escape_plain(attachment.filename)

    def placeholder(self, text: str) -> str | None:
        """For a text part's ``[cid:...]`` (Outlook) or ``[image: name]`` (Gmail)."""
        if text.lower().startswith("cid:"):
            attachment = self.by_cid.get(text[4:].strip().lower())
            return self.markup(attachment) if attachment else ""
        attachment = self.by_name.get(text.partition(":")[2].strip().lower())
        return self.markup(attachment) if attachment else None

    def img(self, el: Tag) -> str | None:
        src = str(el.get("src") or "").strip()
        if src.lower().startswith("cid:"):
            attachment = self.by_cid.get(src[4:].strip().lower())
            return self.markup(attachment) if attachment else None
        return None      # remote and data: images are not fetched into JIRA

    def shown_in(self, soup: BeautifulSoup) -> list[str]:
        """Markup of the attached images that ``soup`` shows, in order."""
        out = []
        for el in soup.find_all("img"):
            markup = self.img(el)
            if markup and markup not in out:
                out.append(markup)
        return out


def _html_signature(html: str) -> list[str]:
    """The lines of the signature block an html part marks as such (Outlook's id="Signature",
    Gmail's and Thunderbird's signature classes), or []."""
    if not html or "ignature" not in html:
        return []
    soup = BeautifulSoup(html, "html.parser")
    block = soup.find(lambda el: str(el.get("id") or "").lower() in _HISTORY_IDS
                      or bool({str(c) for c in el.get("class") or ()} & {"gmail_signature", "moz-signature"}))
    if block is None:
        return []
    return [" ".join(_view(line).split()) for line in block.get_text("\n").split("\n") if _view(line)]


def _view(line: str) -> str:
    return line.replace("\xa0", " ").replace("\u202f", " ").replace("\u200b", "").strip()


def _wiki_view(lines: list[str]) -> list[str]:
    """What each wiki line says, to recognise history in: escapes undone; lines inside
    {noformat} and {quote} blocks opaque (a cut there would break the block)."""
    view, block = [], None
    for line in lines:
        stripped = line.strip()
        if block is None and stripped in ("{noformat}", "{quote}"):
            block = stripped
            view.append(stripped)
        elif block is not None:
            view.append(stripped if stripped == block else _OPAQUE)
            block = None if stripped == block else block
        else:
            view.append(_view(re.sub(r"\\(.)", r"\1", line)))
    return view


def reply_of(mail: InboundMail, languages: tuple[str, ...] = REPLY_LANGUAGES) -> str:
    """The customer's new words in ``mail``, as JIRA wiki markup ("" if there are none).

    Cut: the quoted history ("On ... wrote:", "Le ... a écrit :", Outlook's
    "From: ... Sent: ..." / "De : ... Envoyé : ..." blocks, "-----Original
    Message-----", trailing "> " lines; in html gmail_quote, cited blockquotes,
    divRplyFwdMsg and what follows), the signature (after a "-- " line, Gmail's
    and Thunderbird's signature blocks, "Sent from my iPhone"). mail-parser-reply
    knows the reply headers of ``languages`` (English always). Kept: a message the
    customer forwards, and quotes the customer answers in between ({quote}).

    The plain text part is used when there is one, every character JIRA would read
    as markup escaped; an HTML-only mail is converted (bold, italic, links, lists,
    line breaks...; never raw HTML). An image attached inline and shown in the new
    words becomes ``!filename!`` where it stood (the ``[cid:...]`` / ``[image: ...]``
    placeholder of the text part), or at the end when the text part has no
    placeholders; inline images of the history or signature are dropped.
    ``attachments_to_upload`` names the attachments such a reply needs in JIRA.
    """
    embeds = _Embeds(mail)
    text = _lf(mail.text)
    if text.strip():
        lines = text.split("\n")
        parts = []
        signature = _html_signature(mail.html)
        for quoted, block in _segments(lines, [_view(line) for line in lines], languages, signature):
            wiki = wiki_of_text("\n".join(block), embeds.placeholder)
            parts.append("{quote}\n" + wiki + "\n{quote}" if quoted else wiki)
        reply = tidy("\n\n".join(parts))
        if embeds.by_cid and mail.html and not re.search(r"\[(?:cid:|image: )", text):
            missing = [m for m in embeds.shown_in(_without_history(mail.html)) if m not in reply]
            reply = tidy("\n\n".join([reply, *missing]))
        return reply
    if not mail.html.strip():
        return ""
    lines = wiki_of_html(_without_history(mail.html), embeds.img).split("\n")
    parts = []
    for quoted, block in _segments(lines, _wiki_view(lines), languages):
        parts.append("{quote}\n" + "\n".join(block) + "\n{quote}" if quoted else "\n".join(block))
    return tidy("\n\n".join(parts))


def attachments_to_upload(mail: InboundMail, reply: str) -> tuple[Attachment, ...]:
    """The attachments a JIRA comment holding ``reply`` needs: every attachment the customer
    attached, and the inline images the reply shows (``!name!``); not the inline images
    of the quoted history or signature."""
    return tuple(a for a in mail.attachments if not a.inline or _Embeds.markup(a) in reply)
