"""SendGrid Inbound Parse posts that no capture holds, built as SendGrid sends them.

``inbound_post`` writes a whole ``multipart/form-data`` request body with the
fields SendGrid documents and the captures in tests/payloads/sendgrid show:
default mode (``headers``, ``dkim``, ``content-ids``, ``to``, ``html``, ``from``,
``text``, ``sender_ip``, file parts ``attachmentN``, ``envelope``, ``attachments``,
``subject``, ``attachment-info``, ``charsets``, ``SPF``: the order of capture 01)
or raw mode (the whole MIME message in ``email``, then ``dkim``, ``sender_ip``,
``charsets``, ``SPF``, ``to``, ``from``, ``subject``, ``envelope``, ``spam_score``:
the order of capture 04). Boundary ``xYzZY``, CRLF line breaks (LF on request).

The other builders are the mails a customer's reply address receives:
``french_reply`` (a mail client's reply with quoted history and a "-- "
signature: Gmail, Thunderbird or Outlook in French), ``html_only_reply``,
``auto_reply`` (out of office), ``bounce`` (a delivery status report). Each
returns ``(content_type, body)`` for a POST.
"""

from __future__ import annotations

import json
from email import message_from_bytes
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP, default
from email.utils import formataddr, getaddresses

from workers.core.inbound import Attachment

BOUNDARY = "xYzZY"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
REPLY_TO = "sup-42.g2p.pbxt7l4c.qae5f3mtvfgd35r5@replies.example.com"
CUSTOMER = "Jérémie Desautels <jeremie@client.example>"
SUPPORT = "Acme Support <support@acme.example>"
SUBJECT = "Re: [SUP-42] L'export CSV échoue"
DATE = "Thu, 26 Nov 2026 10:41:07 +0100"
MESSAGE_ID = "<CAF=reply.42@mail.client.example>"
SUPPORT_MESSAGE_ID = "<sup-42.feedback.1@relance.acme.example>"


def _addresses_header(value: str | None) -> str | None:
    """Address header text as on the wire: non-ASCII display names RFC 2047 encoded."""
    return value and ", ".join(formataddr(pair, charset="utf-8") for pair in getaddresses([value]))


def _text_header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


def _header_fields(sender, to, cc, subject, date, message_id, in_reply_to, content_type, headers):
    fields = [("Received", "by mx0045p1mdw1.sendgrid.net with SMTP id EWhBuktaVT "
                           "Thu, 26 Nov 2026 09:41:09 +0000 (UTC)"),
              ("MIME-Version", "1.0")]
    if in_reply_to:
        fields += [("References", in_reply_to), ("In-Reply-To", in_reply_to)]
    fields += [("From", sender), ("Date", date), ("Message-ID", message_id), ("Subject", subject), ("To", to)]
    if cc:
        fields.append(("Cc", cc))
    if content_type:
        fields.append(("Content-Type", content_type))
    fields += list((headers or {}).items())
    return [(name, value) for name, value in fields if value is not None]


def _mime(fields, text, html, attachments, crlf) -> bytes:
    """The whole message as a mail client writes it."""
    msg = EmailMessage(policy=default)
    for name, value in fields:
        if name.lower() not in ("content-type", "mime-version"):
            msg[name] = value
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    else:
        msg.set_content("")
    html_part = next((p for p in msg.walk() if p.get_content_type() == "text/html"), None)
    for a in attachments:
        maintype, _, subtype = a.content_type.partition("/")
        if a.inline and html_part is not None:
            html_part.add_related(a.data, maintype, subtype, cid=f"<{a.content_id}>", filename=a.filename,
                                  disposition="inline")
    for a in attachments:
        if a.inline and html_part is not None:
            continue
        maintype, _, subtype = a.content_type.partition("/")
        if a.content_type == "message/rfc822":
            msg.add_attachment(message_from_bytes(a.data, policy=default), filename=a.filename)
        else:
            msg.add_attachment(a.data, maintype, subtype, filename=a.filename,
                               cid=f"<{a.content_id}>" if a.content_id else None)
    return msg.as_bytes(policy=SMTP if crlf else default)


def form_body(parts, crlf: bool = True) -> bytes:
    """A multipart/form-data body: ``parts`` are (name, value) for fields, value str or bytes,
    or (name, value, filename, content_type) for file parts."""
    nl = b"\r\n" if crlf else b"\n"
    out = bytearray()
    for name, value, *file in parts:
        out += b"--" + BOUNDARY.encode() + nl
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if file:
            disposition += f'; filename="{file[0]}"'
        out += disposition.encode("utf-8") + nl
        if file:
            out += f"Content-Type: {file[1]}".encode() + nl
        data = value if isinstance(value, bytes) else value.encode("utf-8")
        out += nl + data + nl
    out += b"--" + BOUNDARY.encode() + b"--" + nl
    return bytes(out)


def inbound_post(mode: str = "default", *, to: str = REPLY_TO, sender: str = CUSTOMER, subject: str = SUBJECT,
                 text: str | None = "Merci, c'est réglé.", html: str | None = None,
                 attachments: list[Attachment] | tuple = (), headers: dict | None = None,
                 spf: str | None = "pass", dkim: str | None = "{@client.example : pass}", cc: str | None = None,
                 envelope_from: str | None = None, envelope_to: list[str] | None = None,
                 date: str = DATE, message_id: str = MESSAGE_ID, in_reply_to: str | None = SUPPORT_MESSAGE_ID,
                 content_type: str | None = None, charsets: dict[str, str] | None = None,
                 crlf: bool = True) -> tuple[str, bytes]:
    """A SendGrid Inbound Parse post of one mail: ``(Content-Type, body)``.

    ``text``/``html``: the mail's parts (None: the mail has no such part: an
    HTML-only mail has ``text=None``). ``attachments``: ``Attachment`` objects, file
    parts in default mode (``inline`` ones get a content id and are referenced by
    the html), MIME parts in raw mode. ``headers``: more header fields of the mail
    (``{"Auto-Submitted": "auto-replied"}``). ``charsets``: the charset each text
    field is encoded in (default mode), as SendGrid declares them; a field that charset
    cannot encode (or Python does not know) is sent as UTF-8 under that label.
    """
    sender_address = getaddresses([sender])[0][1]
    envelope = json.dumps({"to": envelope_to or [getaddresses([to])[0][1]],
                           "from": sender_address if envelope_from is None else envelope_from})
    nl = "\r\n" if crlf else "\n"
    if mode == "raw":
        fields = _header_fields(sender, to, cc, subject, date, message_id, in_reply_to, None, headers)
        mime = _mime(fields, text, html, attachments, crlf)
        parts = [("email", mime), ("dkim", dkim), ("sender_ip", "209.85.160.177"),
                 ("charsets", json.dumps({"to": "UTF-8", "from": "UTF-8", "subject": "UTF-8"})),
                 ("SPF", spf), ("to", to), ("from", sender), ("subject", subject),
                 ("envelope", envelope), ("spam_score", "0.1")]
        return CONTENT_TYPE, form_body([p for p in parts if p[1] is not None], crlf)
    if mode != "default":
        raise ValueError(f"mode is default or raw, not {mode!r}")
    charsets = {"to": "UTF-8", "html": "UTF-8", "subject": "UTF-8", "from": "UTF-8", "text": "UTF-8",
                **({"cc": "UTF-8"} if cc else {}), **(charsets or {})}
    if content_type is None:
        content_type = ('multipart/mixed; boundary="000000000000a1b2c3d4e5f60718"' if attachments else
                        'multipart/alternative; boundary="000000000000647610058e734ec5"' if text is not None
                        and html is not None else 'text/html; charset="UTF-8"' if text is None
                        else 'text/plain; charset="UTF-8"')
    head = _header_fields(_addresses_header(sender), _addresses_header(to), _addresses_header(cc),
                          _text_header(subject), date, message_id, in_reply_to, content_type, headers)

    def encoded(name, value):
        if value is None:
            return None
        try:
            return value.replace("\n", nl).encode(charsets.get(name, "utf-8"))
        except (LookupError, UnicodeEncodeError):    # mislabelled, as mail can be: the bytes stay UTF-8
            return value.replace("\n", nl).encode("utf-8")

    info = {f"attachment{i}": {"filename": a.filename, "name": a.filename, "type": a.content_type,
                               **({"content-id": a.content_id} if a.content_id else {})}
            for i, a in enumerate(attachments, 1)}
    content_ids = {a.content_id: f"attachment{i}" for i, a in enumerate(attachments, 1) if a.content_id}
    parts = [("headers", nl.join(f"{name}: {value}" for name, value in head) + nl),
             ("dkim", dkim),
             ("content-ids", json.dumps(content_ids) if content_ids else None),
             ("to", encoded("to", to)), ("cc", encoded("cc", cc)), ("html", encoded("html", html)),
             ("from", encoded("from", sender)), ("text", encoded("text", text)),
             ("sender_ip", "209.85.160.177")]
    parts += [(f"attachment{i}", a.data, a.filename, a.content_type) for i, a in enumerate(attachments, 1)]
    parts += [("envelope", envelope), ("attachments", str(len(attachments))), ("subject", encoded("subject", subject)),
              ("attachment-info", json.dumps(info) if attachments else None), ("charsets", json.dumps(charsets)),
              ("SPF", spf)]
    return CONTENT_TYPE, form_body([p for p in parts if p[1] is not None], crlf)


# --- the mails a reply address receives ------------------------------------------------------------

FRENCH_NEW_WORDS = ("Bonjour,\n\n"
                    "Oui, l'export échoue toujours après la mise à jour 4.2 : le fichier *ventes_2026.csv* "
                    "reste vide.\n"
                    "Voici ce que je fais :\n"
                    "- ouvrir le tableau de bord\n"
                    "- cliquer sur [Exporter] | CSV\n\n"
                    "Merci d'avance,\n"
                    "Jérémie")
FRENCH_SIGNATURE = "Jérémie Desautels\nResponsable informatique, Client SA\n+33 1 23 45 67 89"
FRENCH_QUESTION = ("Bonjour Jérémie,\n\n"
                   "Pouvez-vous nous dire si l'export échoue toujours depuis la version 4.2 ?\n\n"
                   "Cordialement,\nAcme Support")


def _quoted(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.split("\n"))


def french_reply(mode: str = "default", *, client: str = "gmail", to: str = REPLY_TO, sender: str = CUSTOMER,
                 new_words: str = FRENCH_NEW_WORDS, **kw) -> tuple[str, bytes]:
    """A customer's answer in French above support's quoted question, with a "-- " signature,
    as ``client`` writes it: ``gmail`` (text + html with gmail_quote; Gmail wraps the
    "Le ... a écrit :" line), ``thunderbird`` (text only, moz-cite-prefix) or ``outlook``
    ("De : ... Envoyé : ..." block below an underscore rule, no "-- ")."""
    if client == "gmail":
        text = (f"{new_words}\n\n-- \n{FRENCH_SIGNATURE}\n\n"
                "Le jeu. 26 nov. 2026 à 10:02, Acme Support <support@acme.example> a\nécrit :\n\n"
                f"{_quoted(FRENCH_QUESTION)}\n")
        html = ('<div dir="ltr">' + "".join(f"<div>{line or '<br>'}</div>" for line in new_words.split("\n"))
                + '</div><br clear="all"><div><br></div><span class="gmail_signature_prefix">-- </span><br>'
                '<div dir="ltr" class="gmail_signature">' + "<br>".join(FRENCH_SIGNATURE.split("\n")) + "</div><br>"
                '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">Le jeu. 26 nov. 2026 à 10:02, '
                'Acme Support &lt;<a href="mailto:support@acme.example">support@acme.example</a>&gt; a écrit&nbsp;:'
                '<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid '
                'rgb(204,204,204);padding-left:1ex">' + "<br>".join(FRENCH_QUESTION.split("\n"))
                + "</blockquote></div>")
        return inbound_post(mode, to=to, sender=sender, text=text, html=html, **kw)
    if client == "thunderbird":
        text = (f"{new_words}\n\nLe 26/11/2026 à 10:02, Acme Support a écrit :\n{_quoted(FRENCH_QUESTION)}\n\n"
                f"-- \n{FRENCH_SIGNATURE}\n")
        return inbound_post(mode, to=to, sender=sender, text=text, html=None,
                            headers={"User-Agent": "Mozilla Thunderbird"}, **kw)
    if client == "outlook":
        history = ("De\u00a0: Acme Support <support@acme.example>\n"
                   "Envoyé\u00a0: jeudi 26 novembre 2026 10:02\n"
                   "À\u00a0: Jérémie Desautels <jeremie@client.example>\n"
                   "Objet\u00a0: [SUP-42] L'export CSV échoue")
        text = f"{new_words}\n\n{FRENCH_SIGNATURE}\n\n________________________________\n{history}\n\n{FRENCH_QUESTION}\n"
        html = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head><body>'
                + "".join(f'<div style="font-family: Aptos">{line or "<br>"}</div>' for line in new_words.split("\n"))
                + '<div><br></div><div id="Signature"><p>' + "<br>".join(FRENCH_SIGNATURE.split("\n")) + "</p></div>"
                '<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">'
                '<div id="divRplyFwdMsg" dir="ltr"><font style="font-size:11pt">'
                + "<br>".join(f"<b>{line.split(':', 1)[0]}:</b>{line.split(':', 1)[1]}" for line in history.split("\n"))
                + "</font><div>&nbsp;</div></div><div>" + "<br>".join(FRENCH_QUESTION.split("\n")) + "</div></body></html>")
        return inbound_post(mode, to=to, sender=sender, text=text, html=html,
                            headers={"X-Mailer": "Microsoft Outlook 16.0"}, **kw)
    raise ValueError(f"client is gmail, thunderbird or outlook, not {client!r}")


HTML_ONLY_REPLY = (
    '<html><head><style>p {margin:0}</style><title>RE: [SUP-42]</title></head><body>'
    '<div>Bonjour,</div><div><br></div>'
    '<div>Le bug revient avec la <b>version 4.2</b>, surtout en <i>mode hors ligne</i>.</div>'
    '<div>Étapes :</div><ol><li>ouvrir le <a href="https://app.client.example/dash?id=7&amp;v=2">tableau de bord</a></li>'
    '<li>cliquer sur <code>Exporter</code></li></ol>'
    '<ul><li>navigateur : Firefox 133</li><li>système : Windows 11</li></ul>'
    '<p>Ligne 1<br>Ligne 2 avec *étoiles* et {accolades}</p>'
    '<script>alert(1)</script>'
    '<div id="Signature"><p>Jérémie Desautels<br>Client SA</p></div>'
    '<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">'
    '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" style="font-size:11pt" color="#000000">'
    '<b>De :</b> Acme Support &lt;support@acme.example&gt;<br><b>Envoyé :</b> jeudi 26 novembre 2026 10:02<br>'
    '<b>À :</b> Jérémie Desautels<br><b>Objet :</b> [SUP-42] L\'export CSV échoue</font><div>&nbsp;</div></div>'
    '<div><p>Bonjour Jérémie, pouvez-vous nous dire si l\'export échoue toujours ?</p></div>'
    '</body></html>')


def html_only_reply(mode: str = "default", *, to: str = REPLY_TO, sender: str = CUSTOMER,
                    html: str = HTML_ONLY_REPLY, **kw) -> tuple[str, bytes]:
    """A reply with an html part only (no ``text`` field): Outlook on the web's shape, with its
    divRplyFwdMsg history block and a signature."""
    return inbound_post(mode, to=to, sender=sender, text=None, html=html, **kw)


def auto_reply(mode: str = "default", *, to: str = REPLY_TO, sender: str = CUSTOMER, **kw) -> tuple[str, bytes]:
    """An out-of-office answer, as Exchange sends one: Auto-Submitted: auto-replied."""
    kw.setdefault("headers", {"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"})
    kw.setdefault("subject", "Réponse automatique : [SUP-42] L'export CSV échoue")
    kw.setdefault("text", "Bonjour,\n\nJe suis absent jusqu'au 3 décembre, sans accès à mes e-mails.\n\nJérémie")
    return inbound_post(mode, to=to, sender=sender, **kw)


def _bounce_mime(to: str, original_to: str, crlf: bool) -> bytes:
    nl = "\r\n" if crlf else "\n"
    boundary = "9F3A61C0E2.1764150069/mx.client.example"
    text = f"""Return-Path: <>
Received: by mx.client.example (Postfix) id 9F3A61C0E2; Thu, 26 Nov 2026 10:41:09 +0100 (CET)
Date: Thu, 26 Nov 2026 10:41:09 +0100 (CET)
From: MAILER-DAEMON@mx.client.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Message-Id: <20261126094109.9F3A61C0E2@mx.client.example>

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.client.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{original_to}>: host mail.client.example[192.0.2.25] said: 550 5.1.1
    <{original_to}>: Recipient address rejected: User unknown

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.client.example
Arrival-Date: Thu, 26 Nov 2026 10:41:08 +0100 (CET)

Final-Recipient: rfc822; {original_to}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{original_to}>: Recipient address rejected: User unknown

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Acme Support <support@acme.example>
To: {original_to}
Subject: [SUP-42] L'export CSV echoue
Message-ID: {SUPPORT_MESSAGE_ID}

--{boundary}--
"""
    return text.replace("\n", nl).encode("ascii")


def bounce(mode: str = "default", *, to: str = REPLY_TO, original_to: str = "jeremie@client.example",
           crlf: bool = True) -> tuple[str, bytes]:
    """A Postfix delivery status report (multipart/report) sent back to a reply address."""
    mime = _bounce_mime(to, original_to, crlf)
    envelope = json.dumps({"to": [to], "from": ""})
    if mode == "raw":
        parts = [("email", mime), ("dkim", "none"), ("sender_ip", "192.0.2.25"),
                 ("charsets", json.dumps({"to": "UTF-8", "from": "UTF-8", "subject": "UTF-8"})), ("SPF", "none"),
                 ("to", to), ("from", "MAILER-DAEMON@mx.client.example (Mail Delivery System)"),
                 ("subject", "Undelivered Mail Returned to Sender"), ("envelope", envelope)]
        return CONTENT_TYPE, form_body(parts, crlf)
    msg = message_from_bytes(mime, policy=default)
    head, _, _ = mime.partition(b"\r\n\r\n" if crlf else b"\n\n")
    report, original = [p for p in msg.iter_parts()][1:]
    status = b"".join(block.as_bytes() for block in report.get_payload())
    nl = "\r\n" if crlf else "\n"
    info = {"attachment1": {"filename": "details.txt", "name": "details.txt", "type": "message/delivery-status"},
            "attachment2": {"filename": "Undelivered Message Headers.txt", "name": "Undelivered Message Headers.txt",
                            "type": "text/rfc822-headers"}}
    parts = [("headers", head.decode("ascii") + nl), ("dkim", "none"), ("to", to),
             ("from", "MAILER-DAEMON@mx.client.example (Mail Delivery System)"),
             ("text", next(msg.iter_parts()).get_content().replace("\n", nl)), ("sender_ip", "192.0.2.25"),
             ("attachment1", status, "details.txt", "message/delivery-status"),
             ("attachment2", original.get_content().encode(), "Undelivered Message Headers.txt", "text/rfc822-headers"),
             ("envelope", envelope), ("attachments", "2"), ("subject", "Undelivered Mail Returned to Sender"),
             ("attachment-info", json.dumps(info)),
             ("charsets", json.dumps({"to": "UTF-8", "subject": "UTF-8", "from": "UTF-8", "text": "us-ascii"})),
             ("SPF", "none")]
    return CONTENT_TYPE, form_body(parts, crlf)


def form_fields_post(fields: dict, files: dict | None = None, crlf: bool = True) -> tuple[str, bytes]:
    """A post of the given form fields (as in the ``2N-*-form-fields.json`` captures) and file
    parts ``{name: Attachment}``."""
    parts = [(name, value) for name, value in fields.items() if isinstance(value, str)]
    parts += [(name, a.data, a.filename, a.content_type) for name, a in (files or {}).items()]
    return CONTENT_TYPE, form_body(parts, crlf)
