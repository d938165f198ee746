"""Operator pages, behind HTTP Basic auth (OPERATOR_USER / OPERATOR_PASSWORD).

Without OPERATOR_PASSWORD the pages are closed (403), never open by default.

The dashboard: home (counts, search), a ticket's timeline and timers, pending
timers (run now, cancel), jobs that gave up (retry, retry all), the latest
deliveries. Every button is a POST that needs (1) the operator's credentials,
(2) an Origin (else Referer) naming this very host, and (3) a CSRF token: the
operator's user name signed with itsdangerous under a key derived from
OPERATOR_PASSWORD, valid 12 hours. The key is the same in every web process
(they share the password) and needs no session or cookie; changing the
password voids every token. A POST failing (2) or (3) is answered 403 and
changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from itsdangerous import BadSignature, TimestampSigner

from workers.stores import views
from workers.stores.audit import Audit
from workers.rendering.emails import TEMPLATE_NAMES, Renderer
from workers.core.events import ISSUE_KEY
from workers.failures import FailureStore
from workers.core.rules import load_rules
from workers.rendering.samples import render_samples
from workers.stores.timers import TimerStore

bp = Blueprint("operator", __name__, url_prefix="/operator")

CSRF_MAX_AGE = 12 * 3600
PAGE = views.PAGE_SIZE


@bp.before_request
def require_operator():
    denied = operator_denied()
    if denied is None and request.method == "POST":
        problem = _cross_site_problem()
        if problem:
            return Response(f"Refused: {problem}.\n", 403, mimetype="text/plain")
    return denied


def _signer() -> TimestampSigner:
    settings = current_app.extensions["relance"].settings
    key = hashlib.sha256(b"relance operator csrf\0" + settings.reveal("operator_password").encode()).digest()
    return TimestampSigner(key, salt="relance-operator-form")


def csrf_token() -> str:
    return _signer().sign(request.authorization.username.encode()).decode()


def _cross_site_problem() -> str | None:
    """Why this POST may come from another site, or None."""
    origin = request.headers.get("Origin")
    if origin is None and request.referrer:
        origin = request.referrer
    if not origin or origin == "null":
        return "no Origin or Referer header"
    if urlsplit(origin).netloc.lower() != request.host.lower():
        return "the request comes from another site"
    token = request.form.get("csrf_token", "")
    try:
        signed_for = _signer().unsign(token, max_age=CSRF_MAX_AGE).decode()
    except BadSignature:
        return "missing, invalid or expired form token (reload the page)"
    if not hmac.compare_digest(signed_for.encode(), (request.authorization.username or "").encode()):
        return "the form token belongs to another user"
    return None


@bp.app_template_global()
def operator_csrf_token() -> str:
    return csrf_token()


def operator_denied() -> Response | None:
    """The answer refusing a request without the operator's credentials, or None if it has them."""
    settings = current_app.extensions["relance"].settings
    if not settings.operator_password:
        return Response("Operator pages are closed: set OPERATOR_PASSWORD to open them.\n", 403,
                        mimetype="text/plain")
    auth = request.authorization
    if not (auth and auth.type == "basic"
            and hmac.compare_digest((auth.username or "").encode(), settings.operator_user.encode())
            and hmac.compare_digest((auth.password or "").encode(), settings.reveal("operator_password").encode())):
        return Response("Operator login required.\n", 401, {"WWW-Authenticate": 'Basic realm="relance operator"'},
                        mimetype="text/plain")
    return None


@bp.get("/emails")
def emails():
    """Every email template in every locale, side by side, as customers would see them (sample data)."""
    settings = current_app.extensions["relance"].settings
    rules = load_rules(settings.rules_file, settings.templates_dir)
    renderer = Renderer(settings.templates_dir, rules.locale)
    locales = renderer.locales()
    rows = {}
    for name, locale, mail in render_samples(rules, renderer, TEMPLATE_NAMES, locales, settings.jira_base_url):
        rows.setdefault(name, []).append((locale, mail))
    used = {a.email.template for r in rules.rules for a in r.do if a.email}
    return render_template("operator/emails.html", rows=rows, locales=locales, used=used)


# -- dashboard -----------------------------------------------------------------

def _edge():
    return current_app.extensions["relance"]


def _stores():
    edge = _edge()
    ttl = edge.settings.retention + (edge.rules.longest_delay() if edge.rules else 0)
    return (Audit(edge.redis, ttl=ttl), TimerStore(edge.redis, lease=edge.settings.job_timeout),
            FailureStore(edge.redis, edge.settings.retention))


def _user() -> str:
    return request.authorization.username


def _offset() -> int:
    try:
        return max(0, min(int(request.args.get("offset", 0)), 10**9))
    except ValueError:
        return 0


def _ticket_key(key: str) -> str:
    key = (key or "").strip().upper()
    if not ISSUE_KEY.fullmatch(key):
        abort(404, f"{key[:80]!r} is not a JIRA issue key (like SUP-123)")
    return key


def _back(default: str):
    """Where a button sends the operator after its action: the page it was on (same site only)."""
    target = request.form.get("next", "")
    if not target.startswith("/operator/") or target.startswith("//"):
        target = default
    return redirect(target, code=303)


def _note(message: str, default: str):
    """Back to the page the button was on, saying what was done (replacing an earlier note)."""
    response = _back(default)
    path, _, query = response.location.split("#")[0].partition("?")
    args = [(k, v) for k, v in parse_qsl(query) if k != "done"] + [("done", message[:200])]
    response.location = f"{path}?{urlencode(args, quote_via=quote)}"
    return response


@bp.context_processor
def _helpers():
    return {"iso": views.iso, "relative": views.relative, "now": time.time(), "user": _user()}


@bp.get("/")
def home():
    audit, timers, failures = _stores()
    edge = _edge()
    counts = {"timers": timers.count(), "failures": failures.count(), "queue": views.queue_depth(edge.queue)}
    return render_template("operator/home.html", counts=counts, recent=audit.recent(30),
                           soon=timers.pending(5))


@bp.get("/tickets")
def find_ticket():
    key = (request.args.get("key") or "").strip().upper()
    if not key:
        return redirect(url_for("operator.home"))
    if not ISSUE_KEY.fullmatch(key):
        return render_template("operator/home.html", counts=None, recent=[], soon=[],
                               problem=f"{key[:80]} is not a JIRA issue key (like SUP-123)"), 404
    return redirect(url_for("operator.ticket", key=key))


@bp.get("/tickets/<key>")
def ticket(key):
    key = _ticket_key(key)
    audit, timers, _ = _stores()
    entries, older = audit.page(key, PAGE, request.args.get("before"))
    rules = _edge().rules
    pending = views.ticket_timers(timers, [r.name for r in rules.rules] if rules else [], key)
    return render_template("operator/ticket.html", key=key, lines=[views.describe(e) for e in entries],
                           older=older, first=request.args.get("before") is None, pending=pending,
                           parked=views.parked(_edge().redis, pending),
                           jira_url=_edge().settings.jira_base_url)


@bp.get("/sent/<path:effect_id>")
def sent_email(effect_id):
    """An email as relance sent it (kept in the effects ledger for the retention)."""
    from workers.stores.ledger import EffectLedger
    edge = _edge()
    mail = EffectLedger(edge.redis, edge.settings.retention).sent(effect_id)
    if mail is None:
        abort(404, "no email kept for this effect (not an email, or past the retention)")
    return render_template("operator/sent_email.html", mail=mail, effect_id=effect_id, ticket=mail.get("ticket"),
                           iso=views.iso)


@bp.get("/timers")
def timers_page():
    offset = _offset()
    _, timers, _ = _stores()
    rows = timers.pending(PAGE + 1, offset)
    return render_template("operator/timers.html", timers=rows[:PAGE], offset=offset,
                           parked=views.parked(_edge().redis, rows[:PAGE]),
                           more=len(rows) > PAGE, total=timers.count())


def _timer_form():
    rule = request.form.get("rule", "")
    key = _ticket_key(request.form.get("ticket", ""))
    if not rule or len(rule) > 200:
        abort(400, "which rule's timer?")
    return rule, key


@bp.post("/timers/run")
def timer_run_now():
    rule, key = _timer_form()
    audit, timers, _ = _stores()
    generation = request.form.get("generation", "")
    if views.gave_up(timers, rule, key, generation):
        return _note(f"the job of timer {rule} of {key} gave up: retry it on the Failures page", "/operator/timers")
    if not views.run_now(timers, audit, rule, key, generation, _user()):
        return _note(f"timer {rule} of {key} is no longer pending as shown: nothing done", "/operator/timers")
    return _note(f"timer {rule} of {key} is due now: a worker fires it within a second", "/operator/timers")


@bp.post("/timers/cancel")
def timer_cancel():
    rule, key = _timer_form()
    audit, timers, _ = _stores()
    if not views.cancel(timers, audit, rule, key, _user()):
        return _note(f"timer {rule} of {key} is no longer pending: nothing done", "/operator/timers")
    return _note(f"timer {rule} of {key} cancelled", "/operator/timers")


@bp.get("/failures")
def failures_page():
    offset = _offset()
    _, _, failures = _stores()
    rows = failures.list(limit=PAGE + 1, offset=offset)
    return render_template("operator/failures.html", failures=rows[:PAGE], offset=offset,
                           more=len(rows) > PAGE, total=failures.count())


def _retry(audit: Audit, failures: FailureStore, job_id: str) -> str | None:
    edge = _edge()
    failure = failures.get(job_id)
    if failure is None:
        return None
    new_id = failures.retry(job_id, edge.queue, edge.settings.job_timeout)
    audit.record(failure.ticket, "retried", job=job_id, as_job=new_id, by=_user())
    return new_id


@bp.post("/failures/retry")
def failure_retry():
    audit, _, failures = _stores()
    job_id = request.form.get("job", "")
    new_id = _retry(audit, failures, job_id) if job_id else None
    if new_id is None:
        return _note(f"no failure {job_id[:80]} (already retried?): nothing done", "/operator/failures")
    return _note(f"{job_id} queued again as {new_id}", "/operator/failures")


@bp.post("/failures/retry-all")
def failure_retry_all():
    audit, _, failures = _stores()
    done = 0
    while True:     # in pages, so a long list never loads at once; retried ones leave the index
        batch = failures.list(limit=PAGE)
        if not batch:
            break
        done += sum(1 for f in batch if _retry(audit, failures, f.job_id))
    return _note(f"{done} failed jobs queued again", "/operator/failures")


@bp.get("/deliveries")
def deliveries_page():
    rows, older = views.delivery_page(_edge().redis, PAGE, request.args.get("before"))
    return render_template("operator/deliveries.html", rows=rows, older=older,
                           first=request.args.get("before") is None)
