"""Emails as customers receive them: every template, every locale, safe, localized, traceable."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from tests.standins import SendGridStandIn
from workers.actions import email_context
from workers.rendering.emails import TEMPLATE_NAMES, Renderer
from workers.exceptions import MailError, TransientError
from workers.clients.mail import Message, OutboxMailer, SendGridMailer
from workers.core.rules import load_rules, parse_rules
from workers.rendering.samples import REPORTER, render_samples, sample_ticket
from workers.settings import PROJECT_ROOT

TEMPLATES = PROJECT_ROOT / "templates"
RULES = load_rules(PROJECT_ROOT / "rules.yaml", TEMPLATES)
RENDERER = Renderer(TEMPLATES, "en")
NOW = datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc)


def context(**changes):
    ticket = replace(sample_ticket(NOW), **changes)
    return email_context(RULES, ticket, REPORTER, "https://acme.atlassian.net", now=NOW)


def test_english_and_french_exist_for_every_template():
    assert RENDERER.locales() == ["en", "fr"]
    for locale in ("en", "fr"):
        for name in TEMPLATE_NAMES:
            for part in ("subject", "txt", "html"):
                assert (TEMPLATES / "emails" / locale / f"{name}.{part}").is_file()


@pytest.mark.parametrize("locale", ["en", "fr"])
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_template_renders_in_every_locale(name, locale):
    mail = RENDERER.render(name, locale, context(), "Europe/Paris")
    assert mail.locale == locale
    assert mail.subject.startswith("[SUP-42] ") and "\n" not in mail.subject
    assert "https://acme.atlassian.net/browse/SUP-42" in mail.text
    assert 'href="https://acme.atlassian.net/browse/SUP-42"' in mail.html
    assert f'lang="{locale}"' in mail.html
    assert "<style" not in mail.html and 'style="' in mail.html      # CSS inlined for mail clients
    assert "{{" not in mail.text and "{%" not in mail.html


@pytest.mark.parametrize("locale", ["en", "fr"])
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_template_renders_without_optional_data(name, locale):
    bare = replace(sample_ticket(NOW), comments=(), event=None, times_reopened=0, status="Open", site_url=None)
    ctx = email_context(RULES, bare, None, None, now=NOW)
    assert ctx["question"] is None and ctx["customer_words"] is None and ctx["closes_on"] is None
    mail = RENDERER.render(name, locale, ctx, None)
    assert "#SUP-42" in mail.html      # no JIRA base URL known: still a link, never a crash


def test_the_question_is_support_s_comment_rendered_from_wiki_markup():
    mail = RENDERER.render("feedback_request", "en", context(), "Europe/Paris")
    assert "<strong>exact</strong>" in mail.html
    assert re.search(r"<pre[^>]*><code[^>]*>client = Client\(api_key=KEY\)", mail.html)
    assert "{code" not in mail.html and "{code" not in mail.text
    assert "client.login()" in mail.text and "Sam Support" in mail.text


def test_ticket_text_is_escaped_in_html():
    mail = RENDERER.render("escalation", "en", context(), "UTC")
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html     # the summary
    assert "<b>This is urgent</b>" not in mail.html                           # the customer's words
    assert "&lt;b&gt;This is urgent&lt;/b&gt;" in mail.html


def test_a_summary_with_a_newline_cannot_add_a_header(tmp_path):
    ctx = context(summary="Help\r\nBcc: attacker@evil.example\nX-Spam: yes")
    mail = RENDERER.render("auto_closed", "en", ctx, "UTC")
    assert "\n" not in mail.subject and "\r" not in mail.subject
    path = OutboxMailer(tmp_path, "Support <support@acme.example>").send(
        Message(to=("jane@client.example",), subject=mail.subject, text=mail.text, html=mail.html,
                effect_id="e1", ticket="SUP-42", category="auto_closed"))
    parsed = email.message_from_bytes(Path(path).read_bytes(), policy=email.policy.default)
    assert parsed["Bcc"] is None and parsed["X-Spam"] is None
    assert parsed["To"] == "jane@client.example"
    assert "Bcc: attacker@evil.example" in parsed["Subject"]      # kept as text, on one line


def test_dates_are_formatted_for_the_reader_s_locale_and_time_zone():
    ctx = context(status="Resolved")
    assert ctx["closes_on"] == ctx["since"] + timedelta(days=5)
    fr = RENDERER.render("resolved_notice", "fr_FR", ctx, "Europe/Paris")
    en = RENDERER.render("resolved_notice", "en_US", ctx, "America/New_York")
    assert "30 novembre 2026" in fr.text          # since = 25 Nov 09:30 UTC, + 5 days
    assert "November 30, 2026" in en.text


def test_waiting_time_is_said_in_the_reader_s_language():
    ctx = context(status="Waiting for feedback")
    assert "3\xa0jours" in RENDERER.render("feedback_reminder", "fr", ctx, "Europe/Paris").text
    assert "3 days" in RENDERER.render("feedback_reminder", "en", ctx, "UTC").text


def test_a_locale_without_templates_falls_back_to_the_default():
    assert RENDERER.render("auto_closed", "de_DE", context(), "Europe/Berlin").locale == "en"
    assert RENDERER.render("auto_closed", "fr-CA", context(), "America/Toronto").locale == "fr"


def test_project_locale_and_time_zone_from_the_rules_file():
    rules = parse_rules("statuses: {open: [Open]}\nlocale: en\nprojects:\n  SUP: {locale: fr, time_zone: Europe/Paris}\n")
    assert rules.audience("SUP") == ("fr", "Europe/Paris")
    assert rules.audience("OTHER") == ("en", "UTC")


def test_links_follow_jira_base_url_for_cloud_and_data_center():
    cloud = email_context(RULES, sample_ticket(NOW), None, "https://acme.atlassian.net")
    dc = email_context(RULES, sample_ticket(NOW), None, "https://jira.acme.example/jira")
    assert cloud["ticket"]["url"] == "https://acme.atlassian.net/browse/SUP-42"
    assert dc["ticket"]["url"] == "https://jira.acme.example/jira/browse/SUP-42"


def test_an_unknown_variable_fails_rendering(tmp_path):
    (tmp_path / "emails" / "en").mkdir(parents=True)
    for part, text in (("subject", "[{{ ticket.key }}] hi"), ("txt", "Hello {{ customer_nmae }}"),
                       ("html", "<p>{{ ticket.key }}</p>")):
        (tmp_path / "emails" / "en" / f"typo.{part}").write_text(text)
    with pytest.raises(UndefinedError, match="customer_nmae"):
        Renderer(tmp_path, "en").render("typo", "en", context(), "UTC")


# -- delivery ---------------------------------------------------------------

@pytest.fixture
def sendgrid():
    with SendGridStandIn() as server:
        yield server


def message(name="feedback_request"):
    mail = RENDERER.render(name, "fr", context(), "Europe/Paris")
    return Message(to=("jeanne.martin@client.example",), subject=mail.subject, text=mail.text, html=mail.html,
                   effect_id="d1:feedback-request:0", ticket="SUP-42", category=name)


def test_sendgrid_gets_both_parts_a_category_and_the_issue_key(sendgrid):
    mailer = SendGridMailer(sendgrid.api_key, sendgrid.url, "Acme Support <support@acme.example>",
                            reply_to="Help desk <help@acme.example>")
    assert mailer.send(message())
    [sent] = sendgrid.messages
    assert [c["type"] for c in sent["content"]] == ["text/plain", "text/html"]
    assert sent["categories"] == ["feedback_request"]
    assert sent["custom_args"] == {"issue_key": "SUP-42", "relance_effect": "d1:feedback-request:0"}
    assert sent["from"] == {"email": "support@acme.example", "name": "Acme Support"}
    assert sent["reply_to"] == {"email": "help@acme.example", "name": "Help desk"}


def test_sendgrid_rate_limit_is_waited_out_until_its_reset(sendgrid):
    sendgrid.fail_next(1, status=429, reset_in=1)
    SendGridMailer(sendgrid.api_key, sendgrid.url, "support@acme.example").send(message())
    assert [r.status for r in sendgrid.requests] == [429, 202]


@pytest.mark.parametrize("status", [500, 503])
def test_sendgrid_outages_are_transient(sendgrid, status):
    sendgrid.fail_next(3, status=status)
    with pytest.raises(TransientError):
        SendGridMailer(sendgrid.api_key, sendgrid.url, "support@acme.example").send(message())


def test_a_wrong_api_key_fails_visibly_without_retry(sendgrid):
    with pytest.raises(MailError) as e:
        SendGridMailer("SG.wrong", sendgrid.url, "support@acme.example").send(message())
    assert e.value.status == 401
    assert len(sendgrid.requests) == 1


def test_an_invalid_sender_fails_visibly_without_retry(sendgrid):
    with pytest.raises(MailError) as e:
        SendGridMailer(sendgrid.api_key, sendgrid.url, "not-an-address").send(message())
    assert e.value.status == 400 and "from" in str(e.value)
    assert len(sendgrid.requests) == 1


def test_the_outbox_writes_an_eml_a_mail_client_opens(tmp_path):
    path = Path(OutboxMailer(tmp_path, "Acme Support <support@acme.example>").send(message()))
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert parsed["Subject"].startswith("[SUP-42] ")
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed.get_body(("plain",)).get_content().startswith("Bonjour")
    assert "<html" in parsed.get_body(("html",)).get_content()


def test_samples_render_every_template(tmp_path):
    rendered = list(render_samples(RULES, RENDERER, TEMPLATE_NAMES, ["en", "fr"]))
    assert len(rendered) == 2 * len(TEMPLATE_NAMES)


# -- a comment is enough, or "Give feedback" must be pressed ------------------

COMMENT_IS_FEEDBACK = parse_rules("""
statuses: {open: [Open], waiting_for_feedback: [Waiting for feedback], resolved: [Resolved]}
rules:
  - name: comment-is-feedback
    when: {commented: customer}
    if: {state: waiting_for_feedback}
    do: [{transition: Open}]
""")
BUTTON_ONLY = parse_rules("statuses: {open: [Open], waiting_for_feedback: [Waiting for feedback]}\nrules: []\n")


def waiting_context(rules):
    ticket = replace(sample_ticket(NOW), status="Waiting for feedback")
    return email_context(rules, ticket, REPORTER, "https://acme.atlassian.net", now=NOW)


def test_comment_is_enough_follows_the_rules():
    assert waiting_context(COMMENT_IS_FEEDBACK)["comment_is_enough"] is True
    assert waiting_context(BUTTON_ONLY)["comment_is_enough"] is False


@pytest.mark.parametrize("name", ["feedback_request", "feedback_reminder"])
def test_when_a_comment_is_enough_the_customer_is_not_told_to_press_give_feedback(name):
    en = RENDERER.render(name, "en", waiting_context(COMMENT_IS_FEEDBACK), "UTC")
    fr = RENDERER.render(name, "fr", waiting_context(COMMENT_IS_FEEDBACK), "Europe/Paris")
    assert re.search(r"(sends it|goes) back to support by itself", en.text)
    assert re.search(r"(renvoie|revient) de lui-même", fr.text)
    for mail in (en, fr):
        assert "not enough" not in mail.text + mail.html and "ne suffit pas" not in mail.text + mail.html
        assert "then press" not in mail.text + mail.html and "puis cliquez" not in mail.text + mail.html
        assert "3. " not in mail.text


@pytest.mark.parametrize("name", ["feedback_request", "feedback_reminder"])
def test_when_only_the_button_works_the_customer_is_told_to_press_it(name):
    en = RENDERER.render(name, "en", waiting_context(BUTTON_ONLY), "UTC")
    fr = RENDERER.render(name, "fr", waiting_context(BUTTON_ONLY), "Europe/Paris")
    assert re.search(r"[Pp]ress “Give feedback”", en.text) and "by itself" not in en.text
    assert re.search(r"[Cc]liquez sur (le bouton )?«\xa0Give feedback\xa0»", fr.text)
    assert "de lui-même" not in fr.text + fr.html and "by itself" not in en.html
    assert "<strong>Give feedback</strong>" in en.html and "<strong>Give feedback</strong>" in fr.html


def test_feedback_request_warns_that_a_comment_alone_is_not_enough_only_when_it_is_not():
    warned = RENDERER.render("feedback_request", "en", waiting_context(BUTTON_ONLY), "UTC")
    assert "A comment alone is not enough: until you press “Give feedback”" in warned.text
    assert "3. Press “Give feedback”" in warned.text
    relaxed = RENDERER.render("feedback_request", "fr", waiting_context(COMMENT_IS_FEEDBACK), "Europe/Paris")
    assert "Votre commentaire suffit\xa0: dès que vous commentez, le ticket revient de lui-même au support." \
        in relaxed.text
    assert "Votre commentaire suffit&nbsp;: dès que vous commentez" in relaxed.html


@pytest.mark.parametrize("locale", ["en", "fr"])
def test_ticket_received_describes_the_feedback_step_as_the_rules_make_it(locale):
    relaxed = RENDERER.render("ticket_received", locale, waiting_context(COMMENT_IS_FEEDBACK), "UTC")
    strict = RENDERER.render("ticket_received", locale, waiting_context(BUTTON_ONLY), "UTC")
    assert "Give feedback" not in relaxed.text and "Give feedback" not in relaxed.html
    assert "Give feedback" in strict.text and "Give feedback" in strict.html


# -- internal emails: support has not answered; the customer commented a resolved ticket -----

def internal(name, locale, **changes):
    ctx = context(**changes)
    mail = RENDERER.render(name, locale, ctx, "Europe/Paris")
    assert "{{" not in mail.subject + mail.text + mail.html and "{%" not in mail.text + mail.html
    return mail


@pytest.mark.parametrize("locale, said", [
    ("en", ["[SUP-42] No answer from support for 3 days: Login fails", "has been Reopened since November 25, 2026",
            "Assignee:        Sam Support", "Internal notification", "The customer does not receive it."]),
    ("fr", ["[SUP-42] Sans réponse du support depuis 3\xa0jours\xa0: Login fails",
            "au statut «\xa0Réouvert\xa0» depuis le 25 novembre 2026", "Assigné à\xa0:          Sam Support",
            "Notification interne", "Le client ne la reçoit pas."]),
])
def test_support_silence_tells_the_assignee_how_long_the_customer_has_waited(locale, said):
    mail = internal("support_silence", locale, status="Reopened" if locale == "en" else "Réouvert")
    seen = f"{mail.subject}\n{mail.text}"
    for words in said:
        assert words in seen
    assert "    Still broken after the 2.3.1 update." in mail.text       # the customer's words, quoted
    assert "Nobody is assigned" not in mail.text and "Personne n’est assigné" not in mail.text
    assert "Internal · Waiting for support" in mail.html or "Interne · En attente du support" in mail.html
    assert "quote-customer" in mail.html and "&lt;b&gt;This is urgent&lt;/b&gt;" in mail.html
    assert "<b>This is urgent</b>" not in mail.html


@pytest.mark.parametrize("locale, subject, ask, note", [
    ("en", "[SUP-42] Unassigned, no answer from support for 3 days: ",
     "Nobody is assigned to it. Could a support lead pick it up", "Nobody is assigned to this ticket."),
    ("fr", "[SUP-42] Non assigné, sans réponse du support depuis 3\xa0jours\xa0: ",
     "Personne n’est assigné à ce ticket. Un responsable du support peut-il le prendre en charge",
     "Personne n’est assigné à ce ticket."),
])
def test_support_silence_on_an_unassigned_ticket_asks_a_lead_to_pick_it_up(locale, subject, ask, note):
    mail = internal("support_silence", locale, assignee=None, comments=(), event=None)
    assert mail.subject.startswith(subject)
    assert ask in mail.text
    assert re.search(r'class="note"[^>]*><strong[^>]*>' + re.escape(note), mail.html)
    assert "unassigned" in mail.text or "personne" in mail.text
    assert "has not commented" in mail.text or "n’a pas commenté" in mail.text


def test_support_silence_without_a_status_still_reads_well():
    mail = internal("support_silence", "en", status=None, priority=None)
    assert "it has been waiting since" in mail.text and "Status:          unknown" in mail.text
    assert "Priority:        not set" in mail.text


@pytest.mark.parametrize("locale, said", [
    ("en", ["[SUP-42] The customer commented on a resolved ticket: Login fails",
            "which support resolved on November 25, 2026", "reopen the ticket",
            "relance does not reopen the ticket by itself: a “Thanks!” must not reopen a ticket",
            "The customer does not receive it."]),
    ("fr", ["[SUP-42] Commentaire du client sur un ticket résolu\xa0: Login fails",
            "que le support a résolu le 25 novembre 2026", "rouvrez le ticket",
            "relance ne rouvre pas le ticket de lui-même\xa0: un «\xa0Merci\xa0!\xa0» ne doit pas rouvrir un ticket",
            "Le client ne la reçoit pas."]),
])
def test_customer_replied_quotes_the_customer_and_leaves_the_decision_to_support(locale, said):
    mail = internal("customer_replied", locale, status="Resolved")
    seen = f"{mail.subject}\n{mail.text}"
    for words in said:
        assert words in seen
    assert "    Still broken after the 2.3.1 update." in mail.text
    assert "quote-customer" in mail.html and "&lt;b&gt;This is urgent&lt;/b&gt;" in mail.html
    assert "Internal · Customer comment" in mail.html or "Interne · Commentaire du client" in mail.html


def test_the_samples_give_each_template_the_status_it_is_written_for():
    from workers.rendering.samples import sample_context
    assert sample_context(RULES, "support_silence")["ticket"]["status"] == "Reopened"
    assert sample_context(RULES, "feedback_request")["ticket"]["status"] == "Waiting for feedback"
    assert sample_context(RULES, "customer_replied")["ticket"]["status"] == "Resolved"
    assert sample_context(RULES, "customer_replied")["assignee_name"] == "Sam Support"
    assert email_context(RULES, sample_ticket(NOW, assignee=None))["assignee_name"] == ""


# -- JIRA comments (templates/jira/) and chat messages (templates/chat/) -------------

def reopened(**changes):
    return context(status="Reopened", **changes)


@pytest.mark.parametrize("folder, name, locale, expected", [
    ("jira", "escalation_note", "en", "(i) Reopened by Jeanne Martin (2 times so far). Priority raised to *High*; "
                                      "the support leads have been notified."),
    ("jira", "escalation_note", "fr", "(i) Ticket rouvert par Jeanne Martin (2e\xa0fois). Priorité relevée à "
                                      "*High*\xa0; les responsables du support ont été prévenus."),
    # chat: two plain lines, the ticket's text as typed, the link last
    ("chat", "escalation_chat", "en", "Escalation: SUP-42 reopened by Jeanne Martin (2 times), priority High: "
                                      "Login fails after upgrading to SDK 2.3 <script>alert(1)</script>\n"
                                      "https://acme.atlassian.net/browse/SUP-42"),
    ("chat", "escalation_chat", "fr", "Escalade\xa0: SUP-42 rouvert par Jeanne Martin (2e\xa0fois), priorité "
                                      "High\xa0: Login fails after upgrading to SDK 2.3 <script>alert(1)</script>\n"
                                      "https://acme.atlassian.net/browse/SUP-42"),
])
def test_the_escalation_s_jira_comment_and_chat_message(folder, name, locale, expected):
    assert RENDERER.render_text(folder, name, locale, reopened(), "Europe/Paris") == expected


def test_the_escalation_note_of_a_first_reopening_without_a_known_author_or_priority():
    ctx = context(status="Reopened", times_reopened=1, event=None, priority=None)
    assert ctx["reopened_by"] == ""
    assert RENDERER.render_text("jira", "escalation_note", "en", ctx) == \
        "(i) Reopened. Priority raised; the support leads have been notified."
    assert RENDERER.render_text("jira", "escalation_note", "fr_FR", ctx) == \
        "(i) Ticket rouvert. Priorité relevée\xa0; les responsables du support ont été prévenus."


def test_a_text_template_in_an_unknown_locale_falls_back_to_the_default():
    assert RENDERER.render_text("chat", "escalation_chat", "de_DE", reopened()).startswith("Escalation: SUP-42")


def test_text_samples_render_every_jira_and_chat_template():
    from workers.rendering.samples import render_text_samples, text_templates
    jira = ("email_bounced", "email_reply", "escalation_note")
    for folder, names in (("jira", jira), ("chat", ("escalation_chat",))):
        pairs = text_templates(TEMPLATES, folder)
        assert pairs == [(locale, name) for locale in ("en", "fr") for name in names]
        for locale, _, text in render_text_samples(RULES, RENDERER, folder, pairs):
            assert "SUP-42" in text or "Jeanne Martin" in text or "jeanne.martin@client.example" in text \
                or "Claire Client" in text
            assert "{{" not in text and "{%" not in text
