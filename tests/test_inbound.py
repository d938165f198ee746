"""Inbound Parse posts -> what a support agent reads in JIRA (workers/core/inbound.py).

Real posts from tests/payloads/sendgrid (see SOURCES.md there) and posts built by
tests/inbound_posts.py for what no capture holds (French quoted replies, HTML-only,
attachments, out-of-office, bounces).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import time
import tracemalloc
from email import message_from_bytes
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import inbound_posts as posts
from tests.inbound_posts import CONTENT_TYPE, REPLY_TO, inbound_post
from workers.core.inbound import (Attachment, InboundMail, attachments_to_upload, authentication_problem,
                                  auto_reply_reason, parse_inbound, reply_of, safe_filename)
from workers.core.wiki import escape_wiki
from workers.exceptions import InboundError, RelanceError

CAPTURES = Path(__file__).parent / "payloads" / "sendgrid"
MODES = ["default", "raw"]


def capture(prefix: str) -> InboundMail:
    return parse_inbound(CONTENT_TYPE, next(CAPTURES.glob(f"{prefix}-*.multipart.txt")).read_bytes())


def form_fields(prefix: str) -> dict:
    return json.loads(next(CAPTURES.glob(f"{prefix}-*-form-fields.json")).read_text())


def post(builder=inbound_post, *args, **kw) -> InboundMail:
    return parse_inbound(*builder(*args, **kw))


# --- every capture --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(CAPTURES.glob("*.multipart.txt")), ids=lambda p: p.name[:2])
def test_every_captured_post_parses(path):
    mail = parse_inbound(CONTENT_TYPE, path.read_bytes())
    assert mail.mode == ("raw" if "send_raw" in path.name else "default")
    assert "@" in mail.sender and mail.to and mail.subject
    assert mail.date_ms and mail.date_ms > 1_400_000_000_000
    assert isinstance(reply_of(mail), str)


def _stand_in(file_part: dict) -> Attachment:
    """22's file parts: the given content, else a small stand-in of the same type."""
    content_type = file_part["content_type"].split(";")[0]
    data = file_part.get("content", "").encode() or (
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) if content_type == "image/png"
        else b"From: a@example.com\r\nSubject: forwarded\r\n\r\nHello\r\n")
    return Attachment(file_part["filename"], content_type, data)


@pytest.mark.parametrize("path", sorted(CAPTURES.glob("*-form-fields.json")), ids=lambda p: p.name[:2])
def test_every_captured_set_of_form_fields_parses(path):
    fields = json.loads(path.read_text())
    files = {name: _stand_in(value) for name, value in fields.items() if isinstance(value, dict)}
    mail = parse_inbound(*posts.form_fields_post(fields, files))
    assert mail.mode == ("raw" if "email" in fields else "default")
    assert [a.data for a in mail.attachments if mail.mode == "default"] == [f.data for f in files.values()]
    assert isinstance(reply_of(mail), str)


@pytest.mark.parametrize("prefix, reply, sender, to, cc, attachments", [
    ("20", "Test body plain", ("from+test@example.org", "Displayed From"),
     ("test@inbound.example.com", "other@example.com"), ("cc@example.com",), []),
    ("21", "It's a body…", ("test@example.org", "A tester"), ("test@inbound.example.com",), (), []),
    ("23", "Here's an email with multiple attachments", ("example@example.com", "Sender Name"),
     ("example@example.comom",), (), []),
    ("24", "This is a test email with 1 attachment.", ("example@example.com", "Sender Name"),
     ("example@example.comom",), (), [("DockMcWordface.docx", "application/vnd.openxmlformats-officedocument."
                                       "wordprocessingml.document")]),
    ("25", "This is a message.\n\nSent with Unibox", ("from@example.com", "Hugo Rodger-Brown"),
     ("to@example.com",), ("b@example.com", "c@example.com"), []),
])
def test_what_the_captured_form_fields_say(prefix, reply, sender, to, cc, attachments):
    mail = parse_inbound(*posts.form_fields_post(form_fields(prefix)))
    assert reply_of(mail) == reply
    assert ((mail.sender, mail.sender_name), mail.to, mail.cc) == (sender, to, cc)
    assert [(a.filename, a.content_type) for a in mail.attachments] == attachments
    assert auto_reply_reason(mail) is None and authentication_problem(mail) is None


# --- what the captures say ------------------------------------------------------------------------

def test_a_real_gmail_reply_keeps_only_the_new_words():
    mail = capture("01")
    assert mail.sender == "neil@neilpoulin.com" and mail.sender_name == "Neil Poulin"
    assert mail.to == ("hello+p_p6ir5hbc7nlezszv66da@cactus.app",)       # the To header, lower case
    assert mail.envelope_to == ("forwarded@inbound.cactus.app",)        # Gmail forwarding: the envelope differs
    assert mail.envelope_from == "hello+caf_=forwarded=inbound.cactus.app@kinecho.com"
    assert mail.in_reply_to == ("<676af7cc149986aaec398daa7.7bac31bb62.20190724084408.5de277e6c5.f28033a2"
                                "@mail17.atl31.mcdlv.net>")
    assert mail.message_id == "<CAP6dnmQxSkFBp9Rcyf0L6jW0h459JLzEjzEPx51_xyGdTG+KKA@mail.gmail.com>"
    assert mail.date_ms == 1564000760000                                  # Wed, 24 Jul 2019 13:39:20 -0700
    assert mail.headers["x-forwarded-to"] == "forwarded@inbound.cactus.app"     # case-insensitive
    assert reply_of(mail) == ("Getting weird and feel free of judgement. I love collaborating on strange\n"
                              "concepts that spiral into something that is so far away from where we\n"
                              "originally started.")
    assert (mail.spf, mail.dkim) == ("permerror", {"neilpoulin-com.20150623.gappssmtp.com": "pass"})
    assert authentication_problem(mail) is None and auto_reply_reason(mail) is None


def test_the_html_of_the_real_gmail_reply_gives_the_same_words_without_quote_or_signature():
    html_only = dataclasses.replace(capture("01"), text="")
    assert reply_of(html_only) == ("Getting weird and feel free of judgement. I love collaborating on strange "
                                   "concepts that spiral into something that is so far away from where we "
                                   "originally started.")


def test_a_forwarded_message_is_what_the_customer_sends_and_is_kept():
    mail = capture("02")
    expected_end = "Subject: testing webhook parse\nTo: <test\\@parse.ashleyroach.com>\n\nthis is the body for webhook parse"
    assert reply_of(mail).startswith("\\-\\-\\-\\-\\-\\-\\-\\-\\-\\- Forwarded message")
    assert reply_of(mail).endswith(expected_end)
    assert reply_of(dataclasses.replace(mail, text="")).endswith("this is the body for webhook parse")


def test_an_outlook_post_with_an_inline_image_and_an_attachment():
    mail = capture("03")
    logo, photo = mail.attachments
    assert (logo.filename, logo.content_type, logo.inline, logo.content_id) == \
        ("image001.png", "image/png", True, "image001.png@01D85101.00357470")
    assert (photo.filename, photo.content_type, photo.inline) == ("001.jpg", "image/jpeg", False)
    body = next(CAPTURES.glob("03-*")).read_bytes()
    head = b'filename="001.jpg"\nContent-Type: image/jpeg\n\n'
    start = body.index(head) + len(head)
    assert photo.data == body[start:body.index(b"\n--xYzZY", start)]        # the part's bytes, as they came
    reply = reply_of(mail)
    assert reply == "This is a test\n\n!image001.png!"                      # the [cid:...] placeholder, embedded
    assert attachments_to_upload(mail, reply) == (logo, photo)


def test_raw_mode_decodes_the_mime_message():
    mail = capture("04")
    assert mail.mode == "raw"
    assert (mail.sender, mail.sender_name) == ("myemailaddress@hotmail.com", "Jérémie Desautels")
    assert mail.subject == "Inbound email in raw format"
    assert mail.text.startswith("This is a test 💀")
    (image,) = mail.attachments
    assert (image.filename, image.content_type, image.inline) == ("Frangipani Flowers.jpg", "image/jpeg", True)
    assert image.data.startswith(b"\xff\xd8\xff") and len(image.data) == 108051     # base64 decoded
    assert reply_of(mail) == "This is a test 💀\n\n!Frangipani Flowers.jpg!"


def test_a_forwarded_message_attached_in_raw_mode_is_one_attachment_and_not_an_auto_reply():
    mail = capture("05")
    image, forwarded = mail.attachments
    assert image.inline and not forwarded.inline
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename == "48 Hr Flash-Save 25% 4 pc Machinist Square Set.eml"
    inner = message_from_bytes(forwarded.data)
    assert inner["From"] == "Taylor Toolworks <news@taytools.com>" and inner.is_multipart()
    assert "List-Unsubscribe" in inner               # the marketing mail's, not the customer's
    assert auto_reply_reason(mail) is None
    assert reply_of(mail) == "Hello world 🤡\n\n!DesertSunrise.jpg!"


def test_a_gmail_signature_after_dashes_is_cut():
    mail = capture("06")
    assert reply_of(mail) == "Test"
    (pdf,) = mail.attachments
    assert (pdf.filename, pdf.content_type, pdf.inline) == ("sample (1).pdf", "application/pdf", False)


def test_each_field_is_decoded_in_its_own_charset():
    mail = capture("07")
    assert mail.subject == "Como usted pidió"                          # cp850
    assert mail.text == "Test the ESP’s inbound charset handling…"     # windows-1252
    assert mail.html == "<p>¿Esto se ve como esperabas?</p>"           # iso-8859-1
    assert (mail.sender, mail.sender_name) == ("sender@example.com", "Opérateur de test")
    assert reply_of(mail) == "Test the ESP’s inbound charset handling…"


def test_a_field_in_a_charset_it_does_not_declare_falls_back():
    mail = post(text="Réglé, merci", charsets={"text": "x-no-such-charset"})
    assert mail.text == "Réglé, merci"
    mail = post(text="Réglé — merci", charsets={"text": "us-ascii"})          # mislabelled UTF-8
    assert mail.text == "Réglé — merci"


def test_anymail_attachments_fields_give_safe_names_and_a_forwarded_message():
    fields = form_fields("22")
    files = {name: _stand_in(value) for name, value in fields.items() if isinstance(value, dict)}
    mail = parse_inbound(*posts.form_fields_post(fields, files))
    assert [(a.filename, a.content_type, a.content_id) for a in mail.attachments] == [
        ("test.txt", "text/plain", None), ("image.png", "image/png", "abc123"),
        ("forwarded.msg", "message/rfc822", None)]                         # \share\mail\forwarded.msg
    assert [a.data for a in mail.attachments] == [f.data for f in files.values()]


def test_dkim_none_of_a_2014_post_is_no_verdict():
    assert parse_inbound(*posts.form_fields_post(form_fields("25"))).dkim == {}


# --- replies no capture holds ---------------------------------------------------------------------

FRENCH_REPLY = ("Bonjour,\n\n"
                "Oui, l'export échoue toujours après la mise à jour 4.2 : le fichier \\*ventes\\_2026.csv\\* "
                "reste vide.\n"
                "Voici ce que je fais :\n"
                "\\- ouvrir le tableau de bord\n"
                "\\- cliquer sur \\[Exporter\\] \\| CSV\n\n"
                "Merci d'avance,\n"
                "Jérémie")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("client", ["gmail", "thunderbird", "outlook"])
def test_a_french_reply_loses_its_quoted_history_and_signature(mode, client):
    mail = post(posts.french_reply, mode, client=client)
    assert (mail.sender, mail.sender_name) == ("jeremie@client.example", "Jérémie Desautels")
    assert mail.to == (REPLY_TO,) and mail.envelope_to == (REPLY_TO,)
    assert mail.subject == "Re: [SUP-42] L'export CSV échoue"
    assert mail.in_reply_to == "<sup-42.feedback.1@relance.acme.example>"
    assert reply_of(mail) == FRENCH_REPLY
    assert auto_reply_reason(mail) is None and authentication_problem(mail) is None


@pytest.mark.parametrize("mode", MODES)
def test_the_html_of_french_replies_gives_the_same_words(mode):
    for client in ("gmail", "outlook"):
        mail = post(posts.french_reply, mode, client=client)
        assert reply_of(dataclasses.replace(mail, text="")) == FRENCH_REPLY


def test_english_replies_from_gmail_outlook_and_iphone():
    question = "Hello,\n\nWhich version do you use?\n\nBest regards,\nAcme Support"
    gmail = ("It's 4.2.1 on Windows.\n\nOn Thu, Nov 26, 2026 at 10:02 AM Acme Support <support@acme.example>\n"
             "wrote:\n\n" + "\n".join("> " + line for line in question.split("\n")))
    outlook = ("It's 4.2.1 on Windows.\n\n________________________________\nFrom: Acme Support "
               "<support@acme.example>\nSent: Thursday, November 26, 2026 10:02 AM\nTo: John\n"
               "Subject: [SUP-42] Export\n\n" + question)
    iphone = "It's 4.2.1 on Windows.\n\nSent from my iPhone\n\n> On 26 Nov 2026, at 10:02, Acme Support wrote:\n>\n> Hello"
    original = "It's 4.2.1 on Windows.\n\n-----Original Message-----\nFrom: Acme Support\n" + question
    for text in (gmail, outlook, iphone, original):
        assert reply_of(post(text=text, subject="Re: [SUP-42] Export")) == "It's 4.2.1 on Windows.", text


def test_a_sentence_that_starts_like_a_sign_off_is_not_cut():
    text = "Hi,\nThanks, that fixed the export. But now the import fails:\n\nError 42\nBest, I guess, is a call?"
    assert reply_of(post(text=text)) == ("Hi,\nThanks, that fixed the export. But now the import fails:\n\n"
                                         "Error 42\nBest, I guess, is a call\\?")


def test_quotes_answered_in_between_are_kept_as_quotes():
    text = ("> Which version do you use?\n4.2.1\n\n> And which browser?\nFirefox 133\n\n"
            "Le jeu. 26 nov. 2026 à 10:02, Acme Support <support@acme.example> a écrit :\n"
            "> Which version do you use?\n> And which browser?\n")
    assert reply_of(post(text=text)) == ("{quote}\nWhich version do you use\\?\n{quote}\n\n4.2.1\n\n"
                                         "{quote}\nAnd which browser\\?\n{quote}\n\nFirefox 133")


def test_plain_text_reaches_jira_escaped_line_breaks_and_paragraphs_kept():
    text = ("Price *is* 5_000 {code} [link|x] a | b # c - d + e ^ f ~ g ?? h !img! @sam 50% (y) :)\n"
            "h1. Title\n* not a list\n\n---- no rule\n"
            "C:\\Users\\me and end\\\\\n"
            "see https://app.example/a_b-c?x=1 and mailto:a_b@c.example, ok")
    assert reply_of(post(text=text)) == (
        "Price \\*is\\* 5\\_000 \\{code\\} \\[link\\|x\\] a \\| b \\# c \\- d \\+ e \\^ f \\~ g \\?\\? h "
        "\\!img\\! \\@sam 50\\% \\(y) :\\)\n"
        "h1\u200b. Title\n\\* not a list\n\n\\-\\-\\-\\- no rule\n"
        "C:\\Users\\me and end\\\u200b\\\n"
        "see [https://app.example/a_b-c?x=1] and [mailto:a_b@c.example], ok")


def test_escaping_leaves_no_markup():
    # every character JIRA reads as markup is preceded by a backslash, bar those in links
    escaped = escape_wiki("*_{}[]|#-+^~?!@%")
    assert escaped == "".join("\\" + c for c in "*_{}[]|#-+^~?!@%")


@pytest.mark.parametrize("mode", MODES)
def test_an_html_only_reply_becomes_wiki_text_without_history_signature_or_html(mode):
    mail = post(posts.html_only_reply, mode)
    assert mail.text == "" and "<b>" in mail.html
    assert reply_of(mail) == (
        "Bonjour,\n\n"
        "Le bug revient avec la *version 4.2*, surtout en _mode hors ligne_.\n"
        "Étapes :\n\n"
        "# ouvrir le [tableau de bord|https://app.client.example/dash?id=7&v=2]\n"
        "# cliquer sur {{Exporter}}\n\n"
        "* navigateur : Firefox 133\n"
        "* système : Windows 11\n\n"
        "Ligne 1\n"
        "Ligne 2 avec \\*étoiles\\* et \\{accolades\\}")


def test_no_raw_html_reaches_jira():
    html = ('<div onclick="x()">Hi <b style="color:red">there</b> &lt;b&gt;not bold&lt;/b&gt;</div>'
            '<img src="https://tracker.example/pixel.gif"><img src="data:image/png;base64,AAAA">'
            '<iframe src="https://evil.example"></iframe><script>alert(1)</script><style>p{}</style>'
            '<a href="javascript:alert(1)">click</a> <a href="https://ok.example/x|y]">ok</a>'
            '<pre>  indented {noformat} code\n  line 2</pre><table><tr><th>k</th><th>v</th></tr>'
            '<tr><td>a|b</td><td>2</td></tr></table><blockquote>quoted, then answered</blockquote><p>answer</p>')
    assert reply_of(post(text=None, html=html)) == (
        "Hi *there* <b>not bold</b>\n"
        "click [ok|https://ok.example/x%7Cy%5D]\n\n"
        "{noformat}\n  indented { noformat} code\n  line 2\n{noformat}\n\n"
        "||k||v||\n|a\\|b|2|\n\n"
        "{quote}\nquoted, then answered\n{quote}\n\n"
        "answer")


def test_an_html_only_gmail_reply_with_an_inline_screenshot():
    shot = Attachment("capture.png", "image/png", b"\x89PNG\r\n\x1a\nshot", inline=True, content_id="ii_m3x9")
    logo = Attachment("logo.png", "image/png", b"\x89PNG\r\n\x1a\nlogo", inline=True, content_id="ii_logo")
    html = ('<div dir="ltr">Voici l\'erreur :<div><img src="cid:ii_m3x9" alt="capture.png"></div></div>'
            '<div class="gmail_signature"><img src="cid:ii_logo"> Client SA</div>'
            '<div class="gmail_quote">Le jeu. 26 nov. 2026, Acme a écrit :<blockquote>Bonjour</blockquote></div>')
    for mode in MODES:
        mail = post(text=None, html=html, attachments=[shot, logo], mode=mode)
        assert [a.inline for a in mail.attachments] == [True, True]
        reply = reply_of(mail)
        assert reply == "Voici l'erreur :\n!capture.png!"
        assert [a.filename for a in attachments_to_upload(mail, reply)] == ["capture.png"]   # not the logo


def test_an_inline_image_the_text_part_does_not_place_goes_at_the_end():
    shot = Attachment("capture.png", "image/png", b"\x89PNG\r\n\x1a\nshot", inline=True, content_id="ii_m3x9")
    mail = post(text="Voici l'erreur :", html='<div>Voici l\'erreur :<img src="cid:ii_m3x9"></div>',
                attachments=[shot])
    assert reply_of(mail) == "Voici l'erreur :\n\n!capture.png!"


@pytest.mark.parametrize("mode", MODES)
def test_attachments_arrive_with_safe_names_and_exact_bytes(mode):
    binary = bytes(range(256)) * 64 + b"\r\n--xYzZ\r\n\n\r--\r\n"      # every byte, line breaks, a near-boundary
    files = [Attachment("rapport final.pdf", "application/pdf", b"%PDF-1.7\n" + binary),
             Attachment("..\\..\\Windows\\system.ini", "text/plain", b"[boot]\r\n"),
             Attachment("../../etc/passwd", "text/plain", b"root:x:0:0"),
             Attachment("rapport final.pdf", "application/pdf", b"%PDF-1.4 second"),
             Attachment("journal.log", "text/plain", binary)]
    mail = post(mode=mode, text="Voir les pièces jointes.", attachments=files)
    assert [a.filename for a in mail.attachments] == [
        "rapport final.pdf", "system.ini", "passwd", "rapport final (2).pdf", "journal.log"]
    assert [a.data for a in mail.attachments] == [f.data for f in files]
    assert [a.content_type for a in mail.attachments] == [f.content_type for f in files]
    assert not any(a.inline for a in mail.attachments)
    reply = reply_of(mail)
    assert reply == "Voir les pièces jointes."
    assert attachments_to_upload(mail, reply) == mail.attachments


@pytest.mark.parametrize("name, safe", [
    ("C:\\Users\\Jérémie\\Desktop\\facture.pdf", "facture.pdf"), ("/tmp/x/", "attachment.pdf"),
    ("..", "attachment.pdf"), ("", "attachment.pdf"), (None, "attachment.pdf"), (".htaccess", "htaccess"),
    ('a<b>:"c"|?*.pdf', "a_b___c____.pdf"), ("CON.pdf", "_CON.pdf"), ("tab\there\x00.pdf", "tab_here_.pdf"),
    ("x" * 300 + ".pdf", "x" * 176 + ".pdf")])
def test_safe_filenames(name, safe):
    assert safe_filename(name, "application/pdf") == safe


def test_lf_and_crlf_posts_read_the_same():
    kw = dict(text="Ligne 1\nLigne 2", html="<p>a</p>", attachments=[Attachment("a.bin", "application/octet-stream",
                                                                               b"\x00\r\n\x01")])
    crlf, lf = post(crlf=True, **kw), post(crlf=False, **kw)
    assert crlf.text == lf.text == "Ligne 1\nLigne 2"
    assert reply_of(crlf) == reply_of(lf) == "Ligne 1\nLigne 2"
    assert crlf.attachments == lf.attachments


# --- automatic mail -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_an_out_of_office_answer_is_an_auto_reply(mode):
    mail = post(posts.auto_reply, mode)
    assert auto_reply_reason(mail) == "an automatic message (Auto-Submitted: auto-replied)"


@pytest.mark.parametrize("mode", MODES)
def test_a_bounce_is_an_auto_reply(mode):
    mail = post(posts.bounce, mode)
    assert mail.sender == "mailer-daemon@mx.client.example" and mail.envelope_from == ""
    assert auto_reply_reason(mail) == "an automatic message (Auto-Submitted: auto-replied)"
    without = dataclasses.replace(mail, headers=_without(mail.headers, "Auto-Submitted"))
    assert auto_reply_reason(without) == "a delivery status report (bounce)"
    status = next(a for a in mail.attachments if a.content_type == "message/delivery-status")
    assert b"Status: 5.1.1" in status.data


def _without(headers, *names):
    copy = message_from_bytes(headers.as_bytes())
    for name in names:
        del copy[name]
    return copy


@pytest.mark.parametrize("headers, reason", [
    ({"Auto-Submitted": "auto-generated"}, "an automatic message (Auto-Submitted: auto-generated)"),
    ({"Auto-Submitted": "no"}, None),
    ({"X-Autoreply": "yes"}, "an automatic reply (X-Autoreply)"),
    ({"X-Autorespond": "Out of office"}, "an automatic reply (X-Autorespond)"),
    ({"Precedence": "bulk"}, "an automatic message (Precedence: bulk)"),
    ({"Precedence": "junk"}, "an automatic message (Precedence: junk)"),
    ({"Precedence": "first-class"}, None),
    ({"Return-Path": "<>"}, "a bounce (empty sender <>)"),
    ({"X-Failed-Recipients": "jeremie@client.example"}, "a delivery failure report (X-Failed-Recipients)"),
    ({"List-Id": "Clients <clients.lists.client.example>"}, "a mailing list message (List-Id)"),
    ({"List-Unsubscribe": "<mailto:leave@lists.client.example>"}, "a mailing list message (List-Unsubscribe)"),
])
def test_automatic_message_headers(headers, reason):
    assert auto_reply_reason(post(headers=headers)) == reason


def test_a_read_receipt_is_automatic():
    mail = post(content_type="multipart/report; report-type=disposition-notification; boundary=b")
    assert auto_reply_reason(mail) == "a read receipt (disposition notification)"


def test_mailer_daemon_and_postmaster_senders():
    assert auto_reply_reason(post(sender="MAILER-DAEMON@mx.client.example")) == \
        "a message from mailer-daemon@mx.client.example"
    assert auto_reply_reason(post(sender="Postmaster <postmaster@client.example>")) == \
        "a message from postmaster@client.example"
    assert auto_reply_reason(post(envelope_from="")) == "a bounce (empty sender <>)"


# --- SPF and DKIM ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spf, dkim, problem", [
    ("pass", "{@client.example : pass}", None),
    ("permerror", "{@client.example : pass}", None),      # Gmail forwarding (capture 01)
    ("softfail", "none", None),
    ("neutral", None, None),
    ("none", "{@client.example : fail, @gappssmtp.com : pass}", None),
    (None, None, None),
    ("fail", "{@client.example : pass}", "SPF failed: the sending server may not send mail for client.example"),
    ("pass", "{@client.example : fail}", "DKIM failed: no signature of client.example verified"),
    ("pass", "{@client.example : fail, @mailer.example : fail}",
     "DKIM failed: no signature of client.example, mailer.example verified"),
])
def test_spf_and_dkim_policy(spf, dkim, problem):
    mail = post(spf=spf, dkim=dkim)
    assert authentication_problem(mail) == problem


def test_dkim_verdicts_are_read_from_sendgrids_not_json():
    assert post(dkim="{@Client.example : pass, @gappssmtp.com : fail}").dkim == \
        {"client.example": "pass", "gappssmtp.com": "fail"}
    assert post(dkim="none").dkim == {} and post(dkim=None).dkim == {}


# --- not an Inbound Parse post --------------------------------------------------------------------

_, GOOD = inbound_post()


@pytest.mark.parametrize("content_type, body, message", [
    ("application/json", b'{"text": "hi"}', "multipart/form-data, not 'application/json'"),
    ("", GOOD, "not 'untyped'"),
    ("multipart/form-data", GOOD, "has no boundary"),
    (CONTENT_TYPE, b"garbage", "not a readable multipart/form-data post"),
    (CONTENT_TYPE, b"", "not a readable multipart/form-data post"),
    (CONTENT_TYPE, GOOD[: len(GOOD) // 2], "not a readable multipart/form-data post"),
    ("multipart/form-data; boundary=other", GOOD, "not a readable multipart/form-data post"),
    (CONTENT_TYPE, posts.form_body([("name", "Jérémie"), ("message", "hello")]), "none of the fields"),
    (CONTENT_TYPE, posts.form_body([("headers", "From: a@b.example"), ("envelope", "{to: x}")]),
     "envelope field is not a JSON object"),
])
def test_anything_else_is_refused_with_a_reason(content_type, body, message):
    with pytest.raises(InboundError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        parse_inbound(content_type, body)
    assert isinstance(refused.value, RelanceError)


# --- size ------------------------------------------------------------------------------------------

def test_a_30_mb_post_is_read_without_copying_it_many_times():
    big = os.urandom(29 * 1024 * 1024)
    content_type, body = inbound_post(text="Le dump complet.", attachments=[Attachment("dump.bin", "application/octet-stream", big)])
    tracemalloc.start()
    started = time.perf_counter()
    try:
        mail = parse_inbound(content_type, body)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert mail.attachments[0].data == big
    assert peak < 2.5 * len(body), f"peak {peak / 1e6:.0f} MB for a {len(body) / 1e6:.0f} MB post"
    assert elapsed < 5


def test_base64_attachments_in_raw_mode_are_decoded():
    data = os.urandom(3000)
    content_type, body = inbound_post(mode="raw", attachments=[Attachment("trace.bin", "application/octet-stream", data)])
    assert base64.b64encode(data)[:60] in body and data not in body
    assert parse_inbound(content_type, body).attachments[0].data == data


def test_raw_header_fields_with_8bit_bytes_and_encoded_words():
    mime = ("From: Jérémie Dé <j@client.example>\nTo: x@replies.example.com\n"
            "Subject: Réglé =?utf-8?q?d=C3=A9j=C3=A0?= ok\nDate: Thu, 26 Nov 2026 10:41:07 +0100\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nC'est réglé.\n").encode()
    mail = parse_inbound(CONTENT_TYPE, posts.form_body([("email", mime), ("envelope", '{"to": [], "from": ""}')]))
    assert (mail.sender_name, mail.subject, mail.text) == ("Jérémie Dé", "Réglé déjà ok", "C'est réglé.\n")


def test_the_reply_languages_choose_the_history_headers_known():
    text = ("Es geht wieder, danke.\n\nAm 26.11.2026 um 10:02 schrieb Acme Support <support@acme.example>:\n"
            "> Geht es wieder?\n\n\nHallo zusammen")
    mail = post(text=text)
    assert reply_of(mail, ("de",)) == "Es geht wieder, danke."
    assert "schrieb" in reply_of(mail)            # English and French only, by default


def test_long_lines_and_long_quotes_are_read_in_linear_time():
    # mail-parser-reply's "On ... wrote:" pattern is quadratic in a line's length
    text = "On " + "the dashboard, " * 20_000 + "\n\n" + "\n".join("> " * (i % 30 + 1) + "old words" for i in range(60_000))
    started = time.perf_counter()
    reply = reply_of(post(text=text))
    assert time.perf_counter() - started < 3
    assert reply.startswith("On the dashboard, the dashboard,") and "old words" not in reply


WORD_HTML = ("<html xmlns:o=\"urn:schemas-microsoft-com:office:office\"><head><style>p.MsoNormal{margin:0}</style>"
             "</head><body lang=FR><div class=WordSection1><p class=MsoNormal>Merci, c&#8217;est bon.<o:p></o:p></p>"
             "<p class=MsoNormal><o:p>&nbsp;</o:p></p><div><div style='border:none;border-top:solid #E1E1E1 1.0pt;"
             "padding:3.0pt 0cm 0cm 0cm'><p class=MsoNormal><b>De&nbsp;:</b> Acme Support &lt;support@acme.example&gt;"
             "<br><b>Envoy&eacute;&nbsp;:</b> jeudi 26 novembre 2026 10:02<br><b>&Agrave;&nbsp;:</b> J&eacute;r&eacute;mie"
             "<br><b>Objet&nbsp;:</b> [SUP-42]<o:p></o:p></p></div></div><p class=MsoNormal>Bonjour, l'export "
             "fonctionne-t-il ?<o:p></o:p></p></div></body></html>")
THUNDERBIRD_HTML = ("<html><body><p>Merci, c’est bon.</p><div class=\"moz-cite-prefix\">Le 26/11/2026 à 10:02, Acme "
                    "Support a écrit&nbsp;:<br></div><blockquote type=\"cite\"><p>Bonjour, l'export fonctionne-t-il ?"
                    "</p></blockquote><pre class=\"moz-signature\" cols=\"72\">-- \nJérémie</pre></body></html>")
APPLE_HTML = ("<html><body><div>Merci, c’est bon.</div><div><br></div><div>Envoyé de mon iPhone</div><div><br>"
              "<blockquote type=\"cite\">Le 26 nov. 2026 à 10:02, Acme Support &lt;support@acme.example&gt; a écrit&nbsp;:"
              "<br><br></blockquote></div><blockquote type=\"cite\"><div>Bonjour</div></blockquote></body></html>")


@pytest.mark.parametrize("html", [WORD_HTML, THUNDERBIRD_HTML, APPLE_HTML], ids=["outlook", "thunderbird", "apple"])
def test_html_only_replies_of_other_clients(html):
    assert reply_of(post(text=None, html=html)) == "Merci, c’est bon."


# --- fuzz ------------------------------------------------------------------------------------------

_JIRA_ESCAPE = re.compile(r"\\([-#*_+?^~|%{}\[\]()!@])")
_REAL_POSTS = [p.read_bytes() for p in sorted(CAPTURES.glob("*.multipart.txt")) if p.stat().st_size < 20_000]


def _as_jira_shows(wiki: str) -> str:
    """What JIRA's renderer shows for escaped text: each \\X of a markup character is X."""
    return _JIRA_ESCAPE.sub(r"\1", wiki).replace("\u200b", "")


@given(st.text(alphabet=st.characters(blacklist_characters="\u200b", blacklist_categories=("Cs",)), max_size=200))
def test_escaped_text_shows_as_typed_and_holds_no_markup(text):
    text = text.replace("http", "htp").replace("mailto", "mailt")     # links are written as [url]
    escaped = escape_wiki(text)
    assert _as_jira_shows(escaped) == text
    unescaped = _JIRA_ESCAPE.sub("", escaped)
    assert not set(unescaped) & set("*_{}[]|#+^~?!@%"), escaped
    assert "\\\\" not in escaped.replace("\\\u200b", "")                 # no forced line break


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_REAL_POSTS), st.lists(st.tuples(st.integers(0, 20_000), st.binary(max_size=8)), max_size=4))
def test_a_mangled_post_is_read_or_refused_with_inbound_error(body, edits):
    for at, data in edits:
        at %= len(body) + 1
        body = body[:at] + data + body[at + len(data):]
    try:
        mail = parse_inbound(CONTENT_TYPE, body)
    except InboundError:
        return
    assert isinstance(reply_of(mail), str)
    auto_reply_reason(mail), authentication_problem(mail)


_WORDS = st.text(alphabet=st.characters(blacklist_characters="<>&\u200b", blacklist_categories=("Cs", "Cc")),
                 max_size=20)
_TAGS = st.sampled_from(["b", "i", "u", "s", "em", "strong", "code", "p", "div", "span", "li", "ul", "ol", "pre",
                         "blockquote", "h2", "td", "tr", "table", "q", "sup", "sub", "font", "center", "a"])
_OPEN = {"a": '<a href="https://x.example/?q=<b>&amp;r=1">'}


def _element(tag_and_kids) -> str:
    tag, kids = tag_and_kids
    return _OPEN.get(tag, f"<{tag}>") + "".join(kids) + f"</{tag}>"


_HTML = st.recursive(_WORDS, lambda kids: st.tuples(_TAGS, st.lists(kids, max_size=3)).map(_element), max_leaves=12)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(_HTML, st.sampled_from(MODES))
def test_html_of_any_shape_gives_wiki_text_without_html(html, mode):
    reply = reply_of(post(mode=mode, text=None, html=html + "<br><img src='cid:none'><script>x</script>"))
    assert "<" not in reply and ">" not in reply
