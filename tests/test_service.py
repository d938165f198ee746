"""The whole path through real processes: gunicorn web, `python -m relance worker`, Redis,
and the JIRA and SendGrid stand-ins. Signed webhooks in; emails and JIRA actions out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from relance.embedded import free_port
from tests.jira_events import move, webhook_body
from tests.standins import JiraStandIn, SendGridStandIn
from webhooks.signature import sign
from workers.stores.audit import Audit
from workers.settings import PROJECT_ROOT
from workers.stores.timers import TimerStore

SECRET = "webhook-s3cret"
JOB_TIMEOUT = 3


@pytest.fixture
def jira():
    with JiraStandIn() as server:
        server.add_user(account_id="acc-jane", email="jane@customer.example", display_name="Jane Customer")
        server.add_user(account_id="acc-sam", email="sam@support.example", display_name="Sam Support")
        for key in ("SUP-1", "SUP-2", "SUP-3"):
            server.add_issue(key, status="In Progress", reporter="acc-jane")
        yield server


@pytest.fixture
def sendgrid():
    with SendGridStandIn() as server:
        yield server


class Service:
    """The Procfile's processes, started as a platform would (each in its own process group)."""

    def __init__(self, env):
        self.env, self.port, self.workers, self.web = env, int(env["PORT"]), [], None

    def _spawn(self, *args):
        return subprocess.Popen([sys.executable, *args], cwd=PROJECT_ROOT, env=self.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_web(self, spawned=False):
        """Start gunicorn (unless ``spawned`` already) and wait until it answers."""
        if not spawned:
            self.web = self._spawn("-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", "--workers", "2",
                                   "webhooks:create_app()")
        deadline = time.monotonic() + 30
        while True:     # a child's port has no event to await: poll it
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):     # not up yet, or slow on a busy machine
                pass
            assert self.web.poll() is None, "web process exited"
            assert time.monotonic() < deadline, "web did not start"
            time.sleep(0.1)

    def start_worker(self):
        self.workers.append(self._spawn("-m", "relance", "worker"))
        return self.workers[-1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def post(self, body, delivery, signed=True):
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "X-Atlassian-Webhook-Identifier": delivery}
        if signed:
            headers["X-Hub-Signature"] = sign(SECRET, raw)
        return requests.post(f"{self.url}/webhooks/jira", data=raw, headers=headers, timeout=5)

    def kill(self, process):
        """SIGKILL the process and its children (RQ's scheduler), as a platform's hard stop does."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self):
        for process in [self.web, *self.workers]:
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [self.web, *self.workers]:
            if process:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def service(redis, redis_server, jira, sendgrid, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text((PROJECT_ROOT / "rules.yaml").read_text().replace("after: 5d", "after: 2s"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JIRA_", "SENDGRID_", "MAIL_", "RELANCE_"))}
    env.update(PORT=str(free_port()), REDIS_URL=redis_server.url, RULES_FILE=str(rules),
               JIRA_BASE_URL=jira.url, JIRA_USER_EMAIL=jira.email, JIRA_API_TOKEN=jira.api_token,
               JIRA_WEBHOOK_SECRET=SECRET, SENDGRID_API_KEY=sendgrid.api_key, SENDGRID_API_HOST=sendgrid.url,
               MAIL_FROM="Acme Support <support@acme.example>", RELANCE_JOB_TIMEOUT=str(JOB_TIMEOUT),
               RELANCE_MAINTENANCE_INTERVAL="1")
    svc = Service(env)
    try:
        svc.start_web()
        yield svc
    finally:
        svc.stop()


def transitions_posted(jira, key):
    return [r for r in jira.requests if r.method == "POST" and r.path == f"/rest/api/2/issue/{key}/transitions"]


def test_feedback_request_auto_close_and_a_reopened_ticket_never_closed(service, jira, sendgrid, redis):
    service.start_worker()
    service.start_worker()
    question = {"id": "7", "body": "Which SDK version do you use?", "author": {"accountId": "acc-sam"}}

    assert service.post(move(jira, "SUP-1", "Waiting for feedback", comment=question), "w1").status_code == 202
    assert service.post(move(jira, "SUP-1", "Waiting for feedback"), "w1").status_code == 200   # JIRA's retry
    forged = webhook_body(jira, "SUP-1", "Waiting for feedback", "Open")
    assert service.post(forged, "forged", signed=False).status_code == 401
    [mail] = sendgrid.wait_for(lambda m: m if m else None)
    assert mail["categories"] == ["feedback_request"]
    assert mail["personalizations"][0]["to"] == [{"email": "jane@customer.example"}]
    assert mail["custom_args"]["issue_key"] == "SUP-1"
    assert "Which SDK version do you use?" in mail["content"][0]["value"]

    # Both tickets resolved; SUP-2 is reopened before its 2 s timer is due.
    assert service.post(move(jira, "SUP-1", "Resolved"), "r1").status_code == 202
    assert service.post(move(jira, "SUP-2", "Resolved"), "r2").status_code == 202
    sendgrid.wait_for(lambda m: [x for x in m if x["categories"] == ["resolved_notice"]
                                 and x["custom_args"]["issue_key"] == "SUP-2"])
    assert service.post(move(jira, "SUP-2", "Reopened"), "o2").status_code == 202

    jira.wait_for(lambda reqs: transitions_posted(jira, "SUP-1"), timeout=20)
    closed = sendgrid.wait_for(lambda m: [x for x in m if x["categories"] == ["auto_closed"]])
    assert jira.issue("SUP-1")["fields"]["status"]["name"] == "Closed"
    assert closed[0]["personalizations"][0]["to"] == [{"email": "jane@customer.example"}]

    # SUP-1's timer was due at the same time as SUP-2's would have been: SUP-2 is still reopened.
    assert jira.issue("SUP-2")["fields"]["status"]["name"] == "Reopened"
    assert transitions_posted(jira, "SUP-2") == []
    deadline = time.monotonic() + 10
    while [t for t in TimerStore(redis).pending() if t.rule == "auto-close"]:   # released after its last effect
        assert time.monotonic() < deadline, TimerStore(redis).pending()
        time.sleep(0.05)
    assert "timer cancelled" in [e["kind"] for e in Audit(redis).timeline("SUP-2")]
    escalations = sendgrid.wait_for(lambda m: [x for x in m if x["categories"] == ["escalation"]])
    assert escalations[0]["personalizations"][0]["to"] == [{"email": "support-leads@example.com"}]
    assert jira.issue("SUP-2")["fields"]["priority"]["name"] == "High"
    assert sorted(m["categories"][0] for m in sendgrid.messages) == [
        "auto_closed", "escalation", "feedback_request", "resolved_notice", "resolved_notice"]


def wait_finished(redis, job_ids, timeout=10):
    """Until RQ records each job finished (a job's status has no event to await)."""
    from rq.job import Job
    from rq.serializers import JSONSerializer
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        while job.get_status() != "finished":
            assert time.monotonic() < deadline, (job_id, job.get_status())
            time.sleep(0.05)


TICKETS = ("SUP-1", "SUP-2", "SUP-3")


def test_a_worker_killed_with_jobs_in_flight_has_them_retried_by_another_each_mailing_once(service, jira, sendgrid,
                                                                                            redis):
    first = service.start_worker()
    release = jira.hold("/rest/api/2/user", count=len(TICKETS))     # the reporters' email lookups hang ...
    for n, key in enumerate(TICKETS):
        assert service.post(move(jira, key, "Waiting for feedback"), f"w{n}").status_code == 202
    jira.held.wait_for(lambda held: len(held) == len(TICKETS), timeout=20)     # ... three jobs in flight at once
    killed_at = time.monotonic()
    service.kill(first)                          # ... and the platform kills the worker mid-jobs
    release.set()
    service.start_worker()
    mails = sendgrid.wait_for(lambda m: m if len(m) == len(TICKETS) else None, timeout=JOB_TIMEOUT + 30)
    recovered_in = time.monotonic() - killed_at
    print(f"recovered {recovered_in:.1f} s after SIGKILL")
    assert recovered_in < JOB_TIMEOUT + 5 + 10, recovered_in   # heartbeat TTL + a few maintenance passes
    assert sorted(m["custom_args"]["issue_key"] for m in mails) == list(TICKETS)
    assert {m["categories"][0] for m in mails} == {"feedback_request"}
    wait_finished(redis, [f"delivery-w{n}" for n in range(len(TICKETS))])
    assert len(sendgrid.messages) == len(TICKETS)


def test_a_stopped_worker_finishes_its_jobs_in_flight_first(service, jira, sendgrid, redis):
    worker = service.start_worker()
    release = jira.hold("/rest/api/2/user", count=2)
    for n, key in enumerate(TICKETS[:2]):
        assert service.post(move(jira, key, "Waiting for feedback"), f"s{n}").status_code == 202
    jira.held.wait_for(lambda held: len(held) == 2, timeout=20)
    os.killpg(worker.pid, signal.SIGTERM)         # a deploy stops the worker (warm shutdown) ...
    release.set()                                 # ... while its two jobs wait for JIRA
    assert worker.wait(timeout=30) == 0
    wait_finished(redis, ["delivery-s0", "delivery-s1"])      # done by this worker, not left to be retried
    assert sorted(m["custom_args"]["issue_key"] for m in sendgrid.messages) == list(TICKETS[:2])


def spawn_procfile_web(env, **kw):
    """The Procfile's web command, started as a platform starts it (in its own process group)."""
    from honcho.environ import parse_procfile
    command = parse_procfile((PROJECT_ROOT / "Procfile").read_text()).processes["web"]
    env = {**env, "PATH": os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])}
    return subprocess.Popen(["/bin/sh", "-c", command], cwd=PROJECT_ROOT, env=env, start_new_session=True, **kw)


def bare_env(**variables):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JIRA_", "SENDGRID_", "MAIL_", "RELANCE_",
                                                                     "ALLOW_"))}
    return {**env, "PORT": str(free_port()), **variables}


def test_the_web_process_refuses_unauthenticated_webhooks_with_jira_configured(redis_server):
    env = bare_env(REDIS_URL=redis_server.url, JIRA_BASE_URL="https://acme.atlassian.net",
                   JIRA_USER_EMAIL="bot@acme.example", JIRA_API_TOKEN="api-token")
    web = spawn_procfile_web(env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = web.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(web.pid, signal.SIGKILL)
        web.communicate()
        pytest.fail("the web process started instead of refusing to")
    assert web.returncode != 0
    assert "relance: configuration error: JIRA_BASE_URL is set but nothing authenticates webhooks" in stderr
    assert "JIRA_WEBHOOK_SECRET" in stderr and "JIRA_WEBHOOK_TOKEN" in stderr
    assert "Traceback" not in stderr


def test_the_access_log_does_not_show_the_url_token(redis_server, redis, jira, tmp_path):
    env = bare_env(REDIS_URL=redis_server.url, JIRA_BASE_URL=jira.url, JIRA_USER_EMAIL=jira.email,
                   JIRA_API_TOKEN=jira.api_token, JIRA_WEBHOOK_TOKEN="url-t0ken-9f8e", WEB_CONCURRENCY="1")
    log = tmp_path / "web.log"
    with log.open("w") as out:
        svc = Service(env)
        svc.web = spawn_procfile_web(env, stdout=out, stderr=subprocess.STDOUT)
        try:
            svc.start_web(spawned=True)
            raw = json.dumps(move(jira, "SUP-1", "Resolved")).encode()
            answer = requests.post(f"{svc.url}/webhooks/jira?token=url-t0ken-9f8e", data=raw, timeout=5,
                                   headers={"Content-Type": "application/json"})
            assert answer.status_code == 202
            # One sync worker writes a request's access line before it takes the next request.
            assert requests.get(f"{svc.url}/healthz", timeout=5).ok
        finally:
            svc.stop()
    written = log.read_text()
    assert '"POST /webhooks/jira HTTP/1.1" 202' in written
    assert "url-t0ken-9f8e" not in written


def test_email_both_ways_through_the_real_processes(service, jira, sendgrid, redis):
    """The customer answers the feedback request by replying; SendGrid posts the reply (chunked, as it
    does) to the web process, the worker posts it to JIRA and the ticket goes back to Open. A bounce
    of that email, posted to the Event Webhook, is then written on the ticket."""
    from tests.inbound_posts import french_reply
    service.stop()
    service.env.update(REPLY_DOMAIN="replies.acme.example", RELANCE_SECRET_KEY="reply-secret-for-the-test")
    service.start_web()
    service.start_worker()
    assert service.post(move(jira, "SUP-1", "Waiting for feedback"), "w1").status_code == 202
    [mail] = sendgrid.wait_for(lambda m: m if m else None)
    reply_to = mail["reply_to"]["email"]
    assert reply_to.startswith("sup-1.") and reply_to.endswith("@replies.acme.example")
    assert mail["headers"]["Auto-Submitted"] == "auto-generated"

    content_type, body = french_reply(to=reply_to, sender="Jane Customer <jane@customer.example>")
    chunks = (body[i:i + 4096] for i in range(0, len(body), 4096))       # no Content-Length, as SendGrid posts
    answer = requests.post(f"{service.url}/webhooks/sendgrid/inbound", data=chunks,
                           headers={"Content-Type": content_type}, timeout=10)
    assert answer.status_code == 202, answer.text
    jira.wait_for(lambda requests_: [r for r in requests_ if r.method == "POST"
                                     and r.path == "/rest/api/2/issue/SUP-1/transitions"])
    assert jira.issue("SUP-1")["fields"]["status"]["name"] == "Open"
    [comment] = jira.issue("SUP-1")["fields"]["comment"]["comments"]
    assert comment["body"].startswith("(i) *Jane Customer* replied by email")

    # An out-of-office (refused on the timeline), a forged address (refused at the door), then an
    # HTML-only reply with an attachment (a second comment, the file on the ticket).
    from tests.inbound_posts import auto_reply, html_only_reply
    from workers.core.inbound import Attachment
    from workers.core.replies import reply_address

    def post_reply(post):
        return requests.post(f"{service.url}/webhooks/sendgrid/inbound", data=post[1],
                             headers={"Content-Type": post[0]}, timeout=10)

    assert post_reply(auto_reply(to=reply_to, sender="jane@customer.example")).status_code == 202
    forged = reply_address("not-the-service-secret", "replies.acme.example", "SUP-1", "jane@customer.example",
                           time.time())
    refused = post_reply(french_reply(to=forged, sender="jane@customer.example"))
    assert refused.status_code == 403 and "forged" in refused.text
    shot = Attachment("screen.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert post_reply(html_only_reply(to=reply_to, sender="Jane Customer <jane@customer.example>",
                                      attachments=[shot])).status_code == 202
    jira.wait_for(lambda _: len(jira.issue("SUP-1")["fields"]["comment"]["comments"]) == 2)
    assert [a["filename"] for a in jira.attachments("SUP-1")] == ["screen.png"]
    assert "[^screen.png]" in jira.issue("SUP-1")["fields"]["comment"]["comments"][1]["body"]
    timeline = Audit(redis).timeline("SUP-1")
    assert [e["reason"] for e in timeline if e["kind"] == "reply refused"] == ["auto_reply"]

    bounce = [{"event": "bounce", "email": "jane@customer.example", "timestamp": int(time.time()),
               "sg_event_id": "bounce-1", "sg_message_id": "m1", "type": "bounce", "status": "5.1.1",
               "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
               **mail["custom_args"]}]
    answer = requests.post(f"{service.url}/webhooks/sendgrid/events", json=bounce, timeout=10)
    assert answer.status_code == 202, answer.text
    jira.wait_for(lambda _: len(jira.issue("SUP-1")["fields"]["comment"]["comments"]) == 3)
    note = jira.issue("SUP-1")["fields"]["comment"]["comments"][2]["body"]
    assert "jane@customer.example" in note and "bounced" in note


def test_a_worker_killed_mid_firing_job_leaves_its_timers_due_again_and_each_acts_once(service, jira, sendgrid,
                                                                                        redis):
    first = service.start_worker()
    hold = jira.hold("/rest/api/2/issue/SUP-2/transitions")    # SUP-2's close hangs in the firing job ...
    for key, delivery in (("SUP-1", "r1"), ("SUP-2", "r2")):
        assert service.post(move(jira, key, "Resolved"), delivery).status_code == 202
    jira.held.wait_for(lambda held: held, timeout=30)
    killed_at = time.monotonic()
    service.kill(first)                                        # ... and the platform kills the worker
    hold.set()
    service.start_worker()
    closed = sendgrid.wait_for(lambda m: len([x for x in m if x["categories"] == ["auto_closed"]]) == 2 or None,
                               timeout=JOB_TIMEOUT + 5 + 30)
    recovered_in = time.monotonic() - killed_at
    print(f"timers recovered {recovered_in:.1f} s after SIGKILL")
    assert closed and recovered_in < JOB_TIMEOUT + 5 + 10, recovered_in        # the lease, then a poll
    assert [jira.issue(k)["fields"]["status"]["name"] for k in ("SUP-1", "SUP-2")] == ["Closed", "Closed"]
    assert [len(transitions_posted(jira, k)) for k in ("SUP-1", "SUP-2")] == [1, 1]
    mails = sorted(m["custom_args"]["issue_key"] for m in sendgrid.messages if m["categories"] == ["auto_closed"])
    assert mails == ["SUP-1", "SUP-2"]
