"""SendGrid's Event Webhook in the worker: delivery events on the ticket's timeline, once each, and the rules
language's ``when: {email: bounced}``. Real Redis, the JIRA and SendGrid stand-ins; the events are real
SendGrid bodies (tests/payloads/sendgrid/events/) about an email relance really sent in the test."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PAYLOADS, service_context
from tests.jira_events import move
from tests.support import KEY, deliver, kinds, sam_comment, sent
from workers import context as process_context, defaults
from workers.context import Context
from workers.core.decisions import decide_mail_event
from workers.core.mail_events import audience_of, cause_of, parse_mail_events
from workers.core.rules import parse_rules
from workers.exceptions import RulesError, TransientError
from workers.jobs import retry_rule
from workers.mail_events import process_mail_events
from workers.stores.audit import Audit
from workers.stores.deliveries import DeliveryStore
from workers.stores.mail_events import MailEventStore
from workers.stores.queue import enqueue_call
from workers.worker import run_worker

EVENTS = PAYLOADS / "sendgrid" / "events"
ANYMAIL = "anymail-2016-events-with-custom-args.json"
DOCS = "sendgrid-docs-2021/per-type-examples.json"
KIT = "sendgrid-kit-2025-newer-event-fields.json"
BLOCKED = "signed/2021-04-28-processed-and-bounce-blocked.body.json"
JANE = "jane@customer.example"
LEADS = "support-leads@example.com"


def real(file: str, event: str, type_: str | None = None, nth: int = 0) -> dict:
    """The ``nth`` event named ``event`` (and of bounce ``type_``) in a stored SendGrid body, as published."""
    found = [e for e in json.loads((EVENTS / file).read_text())
             if e.get("event") == event and (type_ is None or e.get("type") == type_)]
    return copy.deepcopy(found[nth])


def about(event: dict, mail: dict, to: str | None = None) -> dict:
    """``event`` as SendGrid sends it for ``mail`` (one the SendGrid stand-in accepted): the mail's custom args
    at the top level, and its recipient."""
    return {**event, **mail["custom_args"], "email": to or mail["personalizations"][0]["to"][0]["email"]}


def post(ctx, *events) -> str:
    """Store a batch as the web edge does (``sgev-<sha256>``); return its delivery id."""
    body = json.dumps(list(events)).encode()
    did = "sgev-" + hashlib.sha256(body).hexdigest()[:40]
    DeliveryStore(ctx.redis).put(did, body)
    return did


def feedback_request(service, jira, sendgrid) -> dict:
    """Send the feedback request to Jane through the real path (webhook, rules, SendGrid); return the mail."""
    deliver(service, move(jira, KEY, "Waiting for feedback", comment=sam_comment(), actor={"accountId": "acc-sam"}),
            "d1")
    [mail] = sent(sendgrid, "feedback_request")
    assert mail["custom_args"] == {"issue_key": KEY, "relance_effect": "d1:feedback-request:0"}
    return mail


def entries(ctx, kind, key=KEY):
    return [e for e in Audit(ctx.redis).timeline(key) if e["kind"] == kind]


def relance_comments(jira, key=KEY):
    """Comments posted through the API (by relance's account)."""
    return [c["body"] for c in jira.issue(key)["fields"]["comment"]["comments"]
            if c["author"].get("accountId") != "acc-jane" and c["author"].get("accountId") != "acc-sam"]


def counted(ctx) -> dict:
    """relance_mail_events_total by event, as /metrics shows it."""
    text = ctx.effects.metrics.exposition(ctx.settings.queue_name).decode()
    return {s.labels["event"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "relance_mail_events_total"}


# -- the timeline --------------------------------------------------------------------

def test_delivery_events_go_on_the_timeline_with_the_email_effect_and_opens_are_ignored(service, jira, sendgrid):
    mail = feedback_request(service, jira, sendgrid)
    batch = [about(real(ANYMAIL, "processed"), mail), about(real(DOCS, "deferred"), mail),
             about(real(KIT, "deferred"), mail), about(real(ANYMAIL, "delivered"), mail),
             about(real(DOCS, "open"), mail), about(real(ANYMAIL, "click"), mail),
             about(real(DOCS, "spamreport"), mail)]
    did = post(service, *batch)
    assert process_mail_events(did) == "7 events, 2 deferred, 1 delivered, 3 not tracked, 1 spamreport"
    assert service.deliveries.outcome(did) == "7 events, 2 deferred, 1 delivered, 3 not tracked, 1 spamreport"
    timeline = Audit(service.redis).timeline(KEY)
    mail_entries = [e for e in timeline if e["kind"].startswith("email ")]
    assert [e["kind"] for e in mail_entries] == ["email deferred", "email deferred", "email delivered",
                                                 "email reported as spam"]
    assert {e["effect"] for e in mail_entries} == {"d1:feedback-request:0"}
    assert {e["to"] for e in mail_entries} == {JANE}
    assert {e["template"] for e in mail_entries} == {"feedback_request"}
    first, second, delivered, spam = mail_entries
    assert (first["response"], first["attempt"]) == ("400 try again later", 5)      # "5" in the docs
    assert second["attempt"] == 5                                                    # 5 in newer fixtures
    assert delivered["response"] == "250 2.0.0 OK 1461095248 m143si2210036ioe.159 - gsmtp"
    assert delivered["sg_event_id"] == "nOSv8m0eTQ-vxvwNwt3fZQ" and delivered["occurred_at"] == 1461095250
    assert spam["audience"] == "customer"
    assert "open" not in json.dumps(mail_entries) and "useragent" not in json.dumps(timeline)
    assert counted(service) == {"deferred": 2, "delivered": 1, "spamreport": 1}
    assert relance_comments(jira) == []             # only a bounce, a block or a drop tells support


def test_events_that_are_not_about_relance_s_emails_change_nothing(service, jira, sendgrid):
    mail = feedback_request(service, jira, sendgrid)
    before = Audit(service.redis).timeline(KEY)
    strangers = json.loads((EVENTS / DOCS).read_text())                 # no issue_key: another sender's mail
    forged = {**real(ANYMAIL, "bounce"), "issue_key": KEY, "relance_effect": "d9:nothing-sent:0"}
    other_ticket = about(real(ANYMAIL, "bounce", nth=0), mail) | {"issue_key": "SUP-2"}
    did = post(service, *strangers, forged, other_ticket, "not an event", 42)
    assert process_mail_events(did) == f"{len(strangers) + 2} events, {len(strangers)} not relance's, 2 unknown emails"
    assert Audit(service.redis).timeline(KEY) == before and Audit(service.redis).timeline("SUP-2") == []
    assert counted(service) == {} and relance_comments(jira) == []


def test_a_body_that_is_not_an_array_is_marked_done_with_the_reason(service):
    did = "sgev-" + "0" * 40
    DeliveryStore(service.redis).put(did, b'{"event": "bounce"}')
    assert process_mail_events(did) == "ignored: an Event Webhook body is a JSON array of events, not dict"
    assert service.deliveries.is_done(did) and process_mail_events(did) == "already processed"


# -- once per event ------------------------------------------------------------------

def test_an_event_in_the_same_batch_twice_and_in_a_later_batch_counts_once(service, jira, sendgrid):
    mail = feedback_request(service, jira, sendgrid)
    bounce = about(real(ANYMAIL, "bounce"), mail)
    delivered = [about(e, mail) for e in json.loads((EVENTS / ANYMAIL).read_text()) if e["event"] == "delivered"]
    assert {e["sg_event_id"] for e in delivered} == {"nOSv8m0eTQ-vxvwNwt3fZQ"}     # SendGrid sent it twice
    first = post(service, *delivered, bounce, bounce)
    assert process_mail_events(first) == "4 events, 1 bounced, 1 delivered, 2 duplicates"
    later = post(service, bounce, *delivered, about(real(DOCS, "deferred"), mail))
    assert process_mail_events(later) == "4 events, 1 deferred, 3 duplicates"
    assert [len(entries(service, k)) for k in ("email bounced", "email delivered")] == [1, 1]
    assert counted(service) == {"bounced": 1, "delivered": 1, "deferred": 1}
    assert len(relance_comments(jira)) == 1


def test_a_job_that_fails_midway_is_retried_and_acts_once(service, jira, sendgrid):
    mail = feedback_request(service, jira, sendgrid)
    bounce = about(real(ANYMAIL, "bounce"), mail)
    did = post(service, bounce)
    # JIRA takes the comment but the answer is lost: the job fails after it acted.
    jira.fail_next(1, status=500, path_contains="/comment", method="POST", after_serving=True)
    with pytest.raises(TransientError):
        process_mail_events(did)                         # what RQ sees, and retries
    assert not service.deliveries.is_done(did) and len(entries(service, "email bounced")) == 1
    again = post(service, bounce, about(real(ANYMAIL, "delivered"), mail))   # the event again, in another batch
    assert process_mail_events(again) == "2 events, 1 delivered, 1 duplicates"
    assert process_mail_events(did) == "1 events, 1 duplicates"          # the retry: nothing left to do
    assert len(relance_comments(jira)) == 1 and len(entries(service, "email bounced")) == 1
    assert counted(service) == {"bounced": 1, "delivered": 1}
    assert [e["detail"] for e in entries(service, "effect done") if e["rule"] == "email-bounced"] == [
        "commented (JIRA shows it after an unclear answer)"]


def test_two_batches_holding_the_same_event_at_once_take_it_once(service, jira, sendgrid):
    mail = feedback_request(service, jira, sendgrid)
    bounce = about(real(ANYMAIL, "bounce"), mail)
    first_batch, second_batch = post(service, bounce), post(service, bounce, about(real(ANYMAIL, "delivered"), mail))
    hold = jira.hold(f"/rest/api/2/issue/{KEY}")         # the first job's read of the ticket hangs
    outcomes = {}
    first = threading.Thread(target=lambda: outcomes.update(first=process_mail_events(first_batch)))
    first.start()
    try:
        jira.held.wait_for(lambda held: held, timeout=10)
        assert process_mail_events(second_batch) == "2 events, 1 bounced, 1 delivered"
    finally:
        hold.set()
        first.join(timeout=10)
    assert outcomes == {"first": "1 events, 1 duplicates"}
    assert len(entries(service, "email bounced")) == 1 and counted(service) == {"bounced": 1, "delivered": 1}
    assert len(relance_comments(jira)) == 1


def test_the_job_runs_from_the_queue_as_the_web_edge_queues_it(service, jira, sendgrid):
    mail = feedback_request(service, jira, sendgrid)
    did = post(service, about(real(ANYMAIL, "bounce"), mail))
    assert enqueue_call(service.queue, "workers.mail_events.process_mail_events", f"mail-events-{did}", (did,), 60)
    run_worker(service, burst=True)
    assert service.queue.fetch_job(f"mail-events-{did}").get_status() == "finished"
    assert service.deliveries.outcome(did) == "1 events, 1 bounced"


# -- the default rule: email-bounced ----------------------------------------------------

def test_a_customer_bounce_is_commented_once_in_jira_saying_why(service, jira, sendgrid):
    mail = feedback_request(service, jira, sendgrid)
    process_mail_events(post(service, about(real(ANYMAIL, "bounce"), mail)))
    [comment] = relance_comments(jira)
    assert re.fullmatch(
        r"\(!\) The feedback request sent on \w+ \d+, \d{4} to jane@customer\.example bounced: mailbox unavailable "
        r"\(550 5\.1\.1 The email account that you tried to reach does not exist\)\. "
        r"The customer will not answer it; reach them another way\.", comment), comment
    assert kinds(service)[-3:] == ["email bounced", "rule fired", "effect done"]
    [bounced] = entries(service, "email bounced")
    assert (bounced["status"], bounced["audience"], bounced["effect"]) == ("5.1.1", "customer", "d1:feedback-request:0")
    [done] = entries(service, "effect done")[-1:]
    assert done["effect"] == "mail-lC0Rc-FuQmKbnxCWxX1jRQ:email-bounced:0"


@pytest.mark.parametrize("file, event, type_, words", [
    (BLOCKED, "bounce", "blocked", "The recipient's mail server blocked the feedback request sent on "),
    (DOCS, "dropped", None, "SendGrid did not send the feedback request sent on "),
    (KIT, "bounce", None, " bounced: mailbox unavailable (500 unknown recipient). The customer"),
])
def test_a_block_or_a_drop_of_a_customer_email_is_commented_too(service, jira, sendgrid, file, event, type_, words):
    mail = feedback_request(service, jira, sendgrid)
    process_mail_events(post(service, about(real(file, event, type_), mail)))
    [comment] = relance_comments(jira)
    assert words in comment and JANE in comment
    if event == "dropped":      # "Bounced Address": SendGrid's suppression list, said in words
        assert "the address bounced before, so SendGrid no longer sends to it." in comment
    if type_ == "blocked":
        assert "(552 5.2.2 The email account that you tried to reach is over quota and inactive" in comment


def test_a_mail_server_s_reply_cannot_put_markup_in_the_comment(service, jira, sendgrid):
    mail = feedback_request(service, jira, sendgrid)
    bounce = about(real(ANYMAIL, "bounce"), mail) | {
        "reason": "550 5.1.1 [~accountid:acc-sam] {color:red}no such user{color} [click|https://evil.example] !x.png!"}
    process_mail_events(post(service, bounce))
    [comment] = relance_comments(jira)
    assert ("(550 5.1.1 \\[~accountid:acc-sam\\] \\{color:red\\}no such user\\{color\\} "
            "\\[click\\|https://evil.example\\] \\!x.png\\!)") in comment
    [bounced] = entries(service, "email bounced")           # the timeline keeps the reply as it came
    assert bounced["reason"].startswith("550 5.1.1 [~accountid:acc-sam] {color:red}")


def test_a_bounce_of_an_email_to_support_is_on_the_timeline_but_never_commented(service, jira, sendgrid):
    deliver(service, move(jira, KEY, "Reopened"), "d2")              # escalate-reopened emails the leads
    [mail] = sent(sendgrid, "escalation")
    assert mail["personalizations"][0]["to"] == [{"email": LEADS}]
    process_mail_events(post(service, about(real(ANYMAIL, "bounce"), mail)))
    [bounced] = entries(service, "email bounced")
    assert (bounced["to"], bounced["audience"], bounced["template"]) == (LEADS, "support", "escalation")
    [skipped] = [e for e in entries(service, "rule skipped") if e["rule"] == "email-bounced"]
    assert skipped["why"] == "the email was for support, not the customer"
    assert relance_comments(jira) == []
    assert not [r for r in jira.requests if r.method == "POST" and r.path.endswith("/comment")]


def test_a_rules_file_without_the_rule_only_keeps_the_timeline(settings, redis, jira, sendgrid, rules_file):
    text = rules_file.read_text()
    rules_file.write_text(text[:text.index("  # An email to the customer bounced")])
    service = service_context(settings, redis, jira, sendgrid)
    try:
        mail = feedback_request(service, jira, sendgrid)
        process_mail_events(post(service, about(real(ANYMAIL, "bounce"), mail)))
    finally:
        process_context.use(None)
    assert len(entries(service, "email bounced")) == 1
    assert entries(service, "rule fired")[-1]["rule"] == "feedback-request"       # nothing fired since
    assert relance_comments(jira) == []
    assert not [r for r in jira.requests if r.method == "POST" and r.path.endswith("/comment")]


def test_if_conditions_are_checked_on_the_ticket_as_jira_shows_it(settings, redis, jira, sendgrid, rules_file):
    rules_file.write_text(rules_file.read_text().replace(
        "    when: {email: bounced}\n", "    when: {email: bounced}\n    if: {state: waiting_for_feedback}\n"))
    service = service_context(settings, redis, jira, sendgrid)
    try:
        mail = feedback_request(service, jira, sendgrid)
        jira.set_status(KEY, "In Progress")         # the customer answered meanwhile; no webhook came yet
        process_mail_events(post(service, about(real(ANYMAIL, "bounce"), mail)))
    finally:
        process_context.use(None)
    [skipped] = [e for e in entries(service, "rule skipped") if e["rule"] == "email-bounced"]
    assert skipped["why"] == "if: state is open, not waiting_for_feedback"
    assert relance_comments(jira) == []


def test_a_comment_jira_refused_is_retried_with_the_bounce_s_facts(service, jira, sendgrid):
    mail = feedback_request(service, jira, sendgrid)
    jira.fail_next(1, status=403, path_contains="/comment", method="POST")
    process_mail_events(post(service, about(real(ANYMAIL, "bounce"), mail)))
    [failure] = service.failures.list()
    assert failure.kind == "effect" and failure.args == ("mail-lC0Rc-FuQmKbnxCWxX1jRQ", "email-bounced", KEY)
    assert relance_comments(jira) == []
    assert retry_rule(*failure.args) == "retried"
    [comment] = relance_comments(jira)
    assert "bounced: mailbox unavailable (550 5.1.1 " in comment


def test_a_retry_once_the_event_is_forgotten_is_dropped_saying_why(service, jira, sendgrid):
    mail = feedback_request(service, jira, sendgrid)
    jira.fail_next(1, status=403, path_contains="/comment", method="POST")
    process_mail_events(post(service, about(real(ANYMAIL, "bounce"), mail)))
    [failure] = service.failures.list()
    key = MailEventStore.key("lC0Rc-FuQmKbnxCWxX1jRQ")
    assert 0 < service.redis.ttl(key) <= defaults.MAIL_EVENT_TTL_SECONDS
    service.redis.delete(key)                       # as when it expires, 7 days on
    assert retry_rule(*failure.args) == "email event gone"
    assert entries(service, "retry dropped")[-1]["why"] == \
        "the email event that fired the rule is forgotten (kept 7 days)"
    assert relance_comments(jira) == []


def test_in_dry_run_the_timeline_says_would_comment(settings, redis, jira):
    ctx = Context.build(settings, redis)            # no JIRA, mail to the outbox
    process_context.use(ctx)
    try:
        deliver(ctx, move(jira, KEY, "Waiting for feedback", cloud=False), "d1")
        [eml] = list(settings.outbox_dir.glob("d1_feedback-request_0.eml"))
        bounce = {**real(ANYMAIL, "bounce"), "issue_key": KEY, "relance_effect": "d1:feedback-request:0",
                  "email": JANE}
        assert process_mail_events(post(ctx, bounce)) == "1 events, 1 bounced"
    finally:
        process_context.use(None)
    [done] = [e for e in entries(ctx, "effect done") if e["rule"] == "email-bounced"]
    assert done["detail"] == "dry run: would comment"
    assert all(r.method == "GET" for r in jira.requests)


def test_the_dashboard_shows_the_bounce_next_to_the_email_it_was_about(settings, redis, jira):
    from webhooks import create_app
    op = settings.replace(operator_password="op-secret")
    ctx = Context.build(op, redis)
    process_context.use(ctx)
    try:
        deliver(ctx, move(jira, KEY, "Waiting for feedback", cloud=False), "d1")
        bounce = {**real(ANYMAIL, "bounce"), "issue_key": KEY, "relance_effect": "d1:feedback-request:0",
                  "email": JANE}
        process_mail_events(post(ctx, bounce))
    finally:
        process_context.use(None)
    page = create_app(op).test_client().get(f"/operator/tickets/{KEY}", auth=("operator", "op-secret"))
    html = page.get_data(as_text=True)
    [item] = re.findall(r'<li class="fail" data-kind="email bounced">(.*?)</li>', html, re.S)
    assert "<b>email bounced: feedback_request (to customer)</b>" in item
    assert "550 5.1.1 The email account that you tried to reach does not exist." in item and JANE in item
    assert 'href="/operator/sent/d1:feedback-request:0">open the email as sent' in item
    assert "<dt>at</dt><dd><time datetime=\"2016-04-19T19:47:30Z\">" in item


# -- the rules language -------------------------------------------------------------

STATUSES = """
statuses:
  open: [Open]
  waiting_for_feedback: [Waiting for feedback]
  resolved: [Resolved]
"""


@pytest.mark.parametrize("rule, problem", [
    ("when: {email: delivered}", "rules[0].when.email: Input should be 'bounced'"),
    ("when: {email: bounced, by: customer}", "'email: bounced' is about the customer's email: it takes no 'by'"),
    ("when: {email: bounced, entered: open}", "give exactly one of 'entered', 'left', 'created: true', 'commented' "
                                              "or 'email'"),
    ("when: {email: bounced}\n    after: 1d", "rules[0].after: a rule on 'email: bounced' acts when SendGrid reports"),
    ("when: {entered: open}\n    after: 1d\n    cancel_on: {email: bounced}",
     "rules[0].cancel_on: 'cancel_on' takes a ticket event"),
    ("when: {email: bounced}\n    if: {state: limbo}", "state 'limbo' is not defined under 'statuses'"),
])
def test_email_bounced_mistakes_are_named_with_their_line(rule, problem):
    text = STATUSES + f"rules:\n  - name: ok\n    when: {{created: true}}\n    do: [{{add_label: x}}]\n" \
                      f"  - name: r\n    {rule}\n    do: [{{add_label: x}}]\n"
    with pytest.raises(RulesError) as e:
        parse_rules(text)
    [found] = [p for p in e.value.problems if problem.replace("rules[0]", "rules[1]") in p]
    line = int(found.split(":")[0])
    assert line in (11, 12, 13), found          # the rule's `when`, `after` or `cancel_on` line
    assert text.splitlines()[line - 1].strip().startswith(("when", "after", "cancel_on", "if", "- name"))


RULES = parse_rules(STATUSES + """
rules:
  - name: note
    when: {email: bounced}
    do: [{comment: "bounced"}]
  - name: note-resolved
    when: {email: bounced}
    if: {state: resolved}
    do: [{add_label: bounced}]
  - name: muted
    when: {email: bounced}
    enabled: false
    do: [{add_label: x}]
  - name: on-entry
    when: {entered: open}
    do: [{add_label: y}]
""")
WAITING = {"state": "waiting_for_feedback", "project": "SUP", "issue_type": "Bug", "priority": "High", "labels": ()}


@pytest.mark.parametrize("kind", ["bounced", "blocked", "dropped"])
def test_email_bounced_fires_on_a_customer_s_bounce_block_or_drop(kind):
    fire, skipped = decide_mail_event(RULES, kind, "customer", WAITING)
    assert fire == ["note"]
    assert skipped == [("note-resolved", "if: state is waiting_for_feedback, not resolved"), ("muted", "disabled")]


@pytest.mark.parametrize("kind, audience, view", [("delivered", "customer", WAITING), ("deferred", "customer", WAITING),
                                                  ("spamreport", "customer", WAITING), ("bounced", "support", WAITING),
                                                  ("bounced", "customer", None)])
def test_email_bounced_does_not_fire_on_anything_else(kind, audience, view):
    assert decide_mail_event(RULES, kind, audience, view)[0] == []


def test_a_missing_audience_is_the_customer_when_the_email_went_to_the_reporter():
    assert audience_of({"audience": "support"}, ("reporter",), JANE, JANE) == "support"      # the ledger's word first
    assert audience_of({"audience": "customer"}, (LEADS,), LEADS, JANE) == "customer"
    assert audience_of({}, ("reporter",), JANE, None) == "customer"
    assert audience_of({}, ("assignee",), "Jane@Customer.example", JANE) == "customer"
    assert audience_of({}, ("assignee",), "sam@support.example", JANE) == "support"
    assert audience_of({}, None, LEADS, None) == "support"


def test_every_stored_body_reads_and_its_kinds_are_relance_s_words():
    read = {path.name: parse_mail_events(path.read_bytes()) for path in EVENTS.rglob("*.json")}
    docs = read["per-type-examples.json"]
    assert [e.kind for e in docs][:6] == ["processed", "dropped", "delivered", "deferred", "bounced", "blocked"]
    assert [e.kind for e in read["unique-args-reserved-keys-processed.json"]] == ["processed"]    # "Processed"
    assert docs[0].ref != docs[0].sg_event_id and re.fullmatch(r"h[0-9a-f]{40}", docs[0].ref)   # "...==": hashed
    assert all(e.issue_key is None for events in read.values() for e in events)      # nobody else's are relance's
    [blocked] = [e for e in read["2021-04-28-processed-and-bounce-blocked.body.json"] if e.kind == "blocked"]
    assert (blocked.status, cause_of(blocked)) == ("5.2.2", "mailbox_full")
    kit_bounce = next(e for e in read[KIT] if e.kind == "bounced")
    assert (kit_bounce.classification, cause_of(kit_bounce)) == ("Invalid Address", "mailbox_unavailable")
    drops = [cause_of(e) for e in read[ANYMAIL] if e.kind == "dropped"]
    assert drops == ["invalid_address", "bounced_before", "unsubscribed"]
