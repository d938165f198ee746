"""A customer's reply by email, through the worker, against a real Redis and the JIRA and SendGrid
stand-ins: the comment support sees, the ticket moving back to Open once, and every refusal."""

from __future__ import annotations

import pytest

from tests.conftest import service_context
from tests.inbound_posts import auto_reply, bounce, french_reply, html_only_reply, inbound_post
from tests.jira_events import move, webhook_body
from tests.support import KEY, deliver, sent
from workers import context as process_context
from workers.core.inbound import Attachment
from workers.core.replies import reply_address
from workers.stores.audit import Audit
from workers.stores.queue import enqueue_call
from workers.worker import run_worker

DOMAIN = "replies.acme.example"
SECRET = "a-secret-key-for-reply-addresses"
JANE = "Jane Customer <jane@customer.example>"


@pytest.fixture
def service(settings, redis, jira, sendgrid):
    ctx = service_context(settings.replace(reply_domain=DOMAIN, secret_key=SECRET), redis, jira, sendgrid)
    yield ctx
    process_context.use(None)


@pytest.fixture
def dry(settings, redis):
    from workers.context import Context
    ctx = Context.build(settings.replace(reply_domain=DOMAIN, secret_key=SECRET), redis)
    process_context.use(ctx)
    yield ctx
    process_context.use(None)


def reply(ctx, post, did="mail-1"):
    """Store an Inbound Parse post as the web edge does, queue its job and run the worker."""
    ctx.deliveries.put_post(did, *post)
    enqueue_call(ctx.queue, "workers.replies.process_reply", f"reply-{did}", (did,), ctx.settings.job_timeout)
    run_worker(ctx, burst=True)


def waiting_for_feedback(ctx, jira, sendgrid) -> str:
    """Put SUP-1 in Waiting for feedback; the Reply-To of the feedback request relance sent."""
    deliver(ctx, move(jira, KEY, "Waiting for feedback"), "d1")
    [mail] = sent(sendgrid, "feedback_request")
    return mail["reply_to"]["email"]


def comments(jira):
    return jira.issue(KEY)["fields"]["comment"]["comments"]


def timeline(ctx, kind):
    return [e for e in Audit(ctx.redis).timeline(KEY) if e["kind"] == kind]


def test_a_french_reply_becomes_a_comment_and_moves_the_ticket_back_to_open(service, jira, sendgrid):
    address = waiting_for_feedback(service, jira, sendgrid)
    assert address.endswith("@" + DOMAIN)
    reply(service, french_reply(to=address, sender=JANE))
    [comment] = comments(jira)
    assert comment["author"]["accountId"] == "relance-bot"       # posted by relance's own account
    assert comment["body"].startswith("(i) *Jane Customer* replied by email on ")
    assert "Bonjour" in comment["body"] and "a écrit" not in comment["body"]   # no quoted history
    assert "Responsable informatique" not in comment["body"]                   # no signature
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Open"                # customer-answered
    [fired] = [e for e in timeline(service, "effect done") if e.get("rule") == "customer-answered"]
    assert "moved to Open" in fired["detail"]


def test_the_same_reply_posted_again_acts_once(service, jira, sendgrid):
    address = waiting_for_feedback(service, jira, sendgrid)
    post = french_reply(to=address, sender=JANE)
    reply(service, post)
    service.deliveries.redis.delete(service.deliveries.key("mail-1") + ":done")    # as if the job ran again
    reply(service, post, did="mail-1")
    assert len(comments(jira)) == 1
    assert len([r for r in jira.requests if r.method == "POST" and r.path.endswith("/transitions")]) == 1


def test_jiras_webhook_for_relances_own_comment_counts_for_nobody(service, jira, sendgrid):
    address = waiting_for_feedback(service, jira, sendgrid)
    reply(service, french_reply(to=address, sender=JANE))
    jira.set_status(KEY, "Waiting for feedback")          # support asks again
    [comment] = comments(jira)
    own = {"accountId": "relance-bot", "displayName": "Relance"}
    webhook = webhook_body(jira, KEY, comment=comment, actor=own)
    webhook["webhookEvent"] = "comment_created"
    webhook.pop("changelog", None)
    deliver(service, webhook, "c-own")
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Waiting for feedback"   # not the customer's answer
    assert not [e for e in timeline(service, "rule fired") if e.get("delivery") == "c-own"]


def test_a_reply_with_an_attachment_uploads_it_and_links_it(service, jira, sendgrid):
    address = waiting_for_feedback(service, jira, sendgrid)
    log = Attachment("stack trace.txt", "text/plain", b"Traceback (most recent call last): ...\n")
    reply(service, inbound_post(to=address, sender=JANE, text="Here is the trace.", attachments=[log]))
    [uploaded] = jira.attachments(KEY)
    assert uploaded["filename"] == "stack trace.txt" and uploaded["data"] == log.data
    [comment] = comments(jira)
    assert "Here is the trace." in comment["body"] and "[^stack trace.txt]" in comment["body"]


def test_an_html_only_reply_reaches_jira_as_wiki_text(service, jira, sendgrid):
    address = waiting_for_feedback(service, jira, sendgrid)
    reply(service, html_only_reply(to=address, sender=JANE))
    [comment] = comments(jira)
    assert "<" not in comment["body"].split(":", 1)[1]         # no HTML reaches JIRA


@pytest.mark.parametrize("post, reason", [
    (lambda a: auto_reply(to=a, sender=JANE), "auto_reply"),
    (lambda a: bounce(to=a), "auto_reply"),
    (lambda a: inbound_post(to=a, sender="Mallory <mallory@elsewhere.example>"), "wrong_sender"),
    (lambda a: inbound_post(to=a, sender=JANE, spf="fail"), "unauthenticated"),
])
def test_refused_replies_are_on_the_timeline_and_never_reach_jira(service, jira, sendgrid, post, reason):
    address = waiting_for_feedback(service, jira, sendgrid)
    reply(service, post(address))
    assert comments(jira) == []
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Waiting for feedback"
    [refused] = timeline(service, "reply refused")
    assert refused["reason"] == reason and refused["why"]


def test_a_colleague_may_answer_when_any_sender_is_accepted(settings, redis, jira, sendgrid):
    ctx = service_context(settings.replace(reply_domain=DOMAIN, secret_key=SECRET, reply_accept_any_sender=True),
                          redis, jira, sendgrid)
    try:
        address = waiting_for_feedback(ctx, jira, sendgrid)
        reply(ctx, inbound_post(to=address, sender="Paul Collègue <paul@customer.example>", text="Réglé, merci."))
        [comment] = comments(jira)
        assert comment["body"].startswith("(i) *Paul Collègue* replied by email")
        assert jira.issue(KEY)["fields"]["status"]["name"] == "Open"
    finally:
        process_context.use(None)


def test_a_flood_from_one_sender_is_cut_after_the_hourly_allowance(service, jira, sendgrid):
    from workers import defaults
    address = waiting_for_feedback(service, jira, sendgrid)
    for n in range(defaults.REPLY_FLOOD_PER_HOUR + 2):
        service.deliveries.put_post(f"mail-{n}", *inbound_post(to=address, sender=JANE, text=f"Message {n}",
                                                              message_id=f"<m{n}@client.example>"))
        enqueue_call(service.queue, "workers.replies.process_reply", f"reply-mail-{n}", (f"mail-{n}",), 30)
    run_worker(service, burst=True)
    assert len(comments(jira)) == defaults.REPLY_FLOOD_PER_HOUR
    assert [e["reason"] for e in timeline(service, "reply refused")] == ["flood", "flood"]


def test_a_token_signed_with_another_key_is_refused_by_the_worker_too(service, jira, sendgrid):
    waiting_for_feedback(service, jira, sendgrid)
    forged = reply_address("another-key-entirely-000", DOMAIN, KEY, "jane@customer.example", 1.8e9)
    reply(service, inbound_post(to=forged, sender=JANE))
    assert comments(jira) == []
    assert "signature" in service.deliveries.outcome("mail-1")


def test_in_dry_run_the_reply_moves_the_ticket_in_relances_memory(dry, jira):
    deliver(dry, move(jira, KEY, "Waiting for feedback"), "d1")
    address = reply_address(SECRET, DOMAIN, KEY, "jane@customer.example", __import__("time").time())
    reply(dry, french_reply(to=address, sender=JANE, new_words="Bonjour,\n\nToujours en panne.\n"))
    comment = [e for e in timeline(dry, "effect done") if e.get("action") == "reply"]
    assert comment and comment[0]["detail"] == "dry run: would comment"
    [fired] = [e for e in timeline(dry, "effect done") if e.get("rule") == "customer-answered"]
    assert "dry run: would move" in fired["detail"]


def test_a_reply_longer_than_a_jira_comment_is_cut_and_attached_whole(service, jira, sendgrid):
    address = waiting_for_feedback(service, jira, sendgrid)
    log = "\n".join(f"2026-11-28 10:{i // 60:02d}:{i % 60:02d} ERROR export failed at row {i}" for i in range(1200))
    reply(service, inbound_post(to=address, sender=JANE, text=f"Here is the whole log:\n\n{log}\n"))
    [comment] = comments(jira)                       # JIRA refuses a comment over 32,767 characters
    assert len(comment["body"]) <= 32_767
    assert "ERROR export failed at row 0" in comment["body"] and "[^reply.txt]" in comment["body"]
    [whole] = jira.attachments(KEY)
    assert whole["filename"] == "reply.txt" and b"row 1199" in whole["data"]
    assert jira.issue(KEY)["fields"]["status"]["name"] == "Open"


def test_a_reply_jira_keeps_refusing_is_kept_as_a_failure_of_its_ticket_and_retried(service, jira, sendgrid):
    from rq import Retry
    address = waiting_for_feedback(service, jira, sendgrid)
    jira.fail_next(2, status=503, retry_after=None, path_contains="/issue/SUP-1/comment", method="POST")
    service.deliveries.put_post("mail-1", *french_reply(to=address, sender=JANE))
    enqueue_call(service.queue, "workers.replies.process_reply", "reply-mail-1", ("mail-1",), 30,
                 retry=Retry(max=1, interval=[0]))
    run_worker(service, burst=True)
    [failure] = service.failures.list()
    assert failure.kind == "reply" and failure.ticket == KEY
    assert comments(jira) == []
    service.failures.retry(failure.job_id, service.queue)        # JIRA answers again: relance retry
    run_worker(service, burst=True)
    assert len(comments(jira)) == 1 and jira.issue(KEY)["fields"]["status"]["name"] == "Open"
