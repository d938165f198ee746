"""``python -m relance <command>``.

up      the whole service: private Redis (unless REDIS_URL), web and worker from the Procfile
worker  one worker process (what the Procfile's ``worker:`` runs)
check   validate the rules file and render every email template; exit 1 with line-numbered errors
preview render email templates with sample data to HTML and text files
simulate run webhook bodies through a rules file on a virtual clock (no Redis, no network)
failures list the jobs that gave up after all their retries
retry   queue failed jobs again (ids from ``failures``, or --all)
timeline what relance recorded of one ticket, oldest first
timers  pending timers, soonest first (of one ticket, or all)
reconcile ask JIRA for tickets changed lately and repair what relance missed
jira check             check the JIRA credentials and that the rules file's statuses exist on the site
jira register-webhook  create or update relance's webhook on the JIRA site (needs a JIRA administrator)
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from redis.exceptions import RedisError

from workers import defaults
from workers.exceptions import ConfigError, PayloadError, RulesError
from workers.settings import PROJECT_ROOT, Settings


TEXT_FOLDERS = {"jira": "JIRA comment", "chat": "chat message"}    # templates/<folder>/<locale>/<name>.txt


def _where(error: Exception, relative: str) -> str:
    """``jira/fr/escalation_note.txt:3``: the line of template ``relative`` where rendering failed, if known."""
    import traceback
    line = error.lineno if getattr(error, "name", None) == relative else None     # a syntax error
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename.replace("\\", "/").endswith("/" + relative):
            line = frame.lineno
    return f"{relative}:{line}" if line else relative


def cmd_check(args) -> int:
    """Validate the rules file, then render every email template in every locale, and every JIRA comment
    (templates/jira/) and chat message (templates/chat/) template, with sample data."""
    settings = Settings.from_env()
    path = Path(args.rules) if args.rules else settings.rules_file
    from jinja2 import TemplateError

    from workers.rendering.emails import TEMPLATE_NAMES, Renderer, template_location
    from workers.core.rules import load_rules
    from workers.rendering.samples import render_samples, render_text_samples, text_templates
    try:
        rules = load_rules(path, settings.templates_dir)
    except RulesError as e:
        print(e, file=sys.stderr)
        return 1
    renderer = Renderer(settings.templates_dir, rules.locale)
    names = sorted(set(TEMPLATE_NAMES) | {a.email.template for r in rules.rules for a in r.do if a.email})
    problems = 0
    for name in names:
        for locale in renderer.locales():
            try:
                list(render_samples(rules, renderer, [name], [locale]))
            except TemplateError as e:
                where = template_location(e) or f"emails/{locale}/{name}"
                print(f"{settings.templates_dir}/{where}: {e.__class__.__name__}: {e}", file=sys.stderr)
                problems += 1
    texts = {}
    for folder in TEXT_FOLDERS:
        for locale, name in text_templates(settings.templates_dir, folder):
            try:
                list(render_text_samples(rules, renderer, folder, [(locale, name)]))
            except TemplateError as e:
                where = _where(e, f"{folder}/{locale}/{name}.txt")
                print(f"{settings.templates_dir}/{where}: {e.__class__.__name__}: {e}", file=sys.stderr)
                problems += 1
            texts.setdefault(f"{folder}/{name}", []).append(locale)
    if problems:
        return 1
    for rule in rules.rules:
        for action in rule.do:
            if action.notify and not os.environ.get(action.notify.url_env):
                print(f"{path}: warning: rule {rule.name!r}: {action.notify.url_env} is not set here; "
                      "its chat message is skipped wherever it is not set", file=sys.stderr)
    timed = sum(1 for r in rules.rules if r.after)
    on_email = sum(1 for r in rules.rules if r.when.kind == "email")     # fired by SendGrid's Event Webhook
    rendered = "".join(f", {name} ({', '.join(locales)})" for name, locales in texts.items())
    print(f"{path}: OK, {len(rules.rules)} rules ({timed} timed"
          + (f", {on_email} on email events" if on_email else "") + f"), {len(rules.statuses)} lifecycle states; "
          f"{len(names)} email templates render in {', '.join(renderer.locales())}"
          + (f"; text templates render too: {rendered[2:]}" if texts else ""))
    return 0


def cmd_preview(args) -> int:
    """Render templates with sample data to HTML and text files a browser and an editor open: emails as
    ``<out>/<locale>/<name>.{html,txt}``, JIRA comments and chat messages as ``<out>/<folder>/<locale>/<name>.txt``."""
    settings = Settings.from_env()
    from workers.rendering.emails import TEMPLATE_NAMES, Renderer
    from workers.core.rules import load_rules
    from workers.rendering.samples import render_samples, render_text_samples, text_templates
    try:
        rules = load_rules(settings.rules_file, settings.templates_dir)
    except RulesError as e:
        print(e, file=sys.stderr)
        return 1
    renderer = Renderer(settings.templates_dir, rules.locale)
    texts = {folder: text_templates(settings.templates_dir, folder) for folder in TEXT_FOLDERS}
    text_names = {name for pairs in texts.values() for _, name in pairs}
    wanted = args.template or list(TEMPLATE_NAMES) + sorted(text_names)
    names = [n for n in wanted if n in TEMPLATE_NAMES or (settings.templates_dir / "emails" / rules.locale /
                                                         f"{n}.html").exists()]
    unknown = [n for n in wanted if n not in names and n not in text_names]
    if unknown:
        known = ", ".join(list(TEMPLATE_NAMES) + sorted(text_names))
        print(f"relance: no template {', '.join(unknown)}; known: {known}", file=sys.stderr)
        return 2
    locales = args.locale or renderer.locales()
    out = Path(args.out)
    for name, locale, mail in render_samples(rules, renderer, names, locales, settings.jira_base_url):
        target = out / locale / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.with_suffix(".html").write_text(mail.html, encoding="utf-8")
        target.with_suffix(".txt").write_text(f"Subject: {mail.subject}\n\n{mail.text}", encoding="utf-8")
        print(f"{target.with_suffix('.html')}  {mail.subject}")
    bases = {(loc or "").replace("-", "_").split("_")[0] for loc in locales} | set(locales)
    for folder, pairs in texts.items():
        pairs = [(loc, n) for loc, n in pairs if n in wanted and loc in bases]
        for locale, name, text in render_text_samples(rules, renderer, folder, pairs, settings.jira_base_url):
            target = out / folder / locale / f"{name}.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text + "\n", encoding="utf-8")
            print(f"{target}  {text.splitlines()[0] if text else ''}")
    return 0


def cmd_worker(args) -> int:
    from workers import logs
    logs.configure(Settings.from_env().log_format)
    from workers.context import current
    from workers.worker import run_worker
    try:
        ctx = current()
    except RulesError as e:
        print(e, file=sys.stderr)
        return 1
    run_worker(ctx, burst=args.burst)
    return 0


def cmd_up(args) -> int:
    """Run the Procfile's processes; with no REDIS_URL, on a private Redis started first and stopped last.

    On Ctrl-C (or SIGTERM) honcho stops web and worker; the private Redis runs in a session
    of its own, so the signal does not reach it, and it is stopped only once they have exited.
    """
    from honcho.environ import parse_procfile
    from honcho.manager import Manager

    from webhooks import require_authentication

    from .embedded import EmbeddedRedis

    settings = Settings.from_env()   # fail early on bad configuration, as the web process would
    require_authentication(settings)
    if cmd_check(argparse.Namespace(rules=None)) != 0:
        return 1
    env = dict(os.environ)
    env.setdefault("PORT", str(args.port))
    embedded = None
    try:
        if not settings.redis_url:
            embedded = EmbeddedRedis(PROJECT_ROOT / defaults.EMBEDDED_REDIS_DIR).start()
            env["REDIS_URL"] = embedded.url
            _url_file().write_text(embedded.url)     # so `relance failures` finds it without REDIS_URL
            print(f"relance: private Redis on {embedded.url} (data in {defaults.EMBEDDED_REDIS_DIR})")
        print(f"relance: webhooks at http://127.0.0.1:{env['PORT']}/webhooks/jira")
        if not settings.operator_password:
            env["OPERATOR_PASSWORD"] = secrets.token_urlsafe(12)
            print(f"relance: email previews at http://127.0.0.1:{env['PORT']}/operator/emails "
                  f"(user {settings.operator_user}, password {env['OPERATOR_PASSWORD']} for this run; "
                  f"set OPERATOR_PASSWORD to choose one)")
        print("relance: JIRA " + (settings.jira_base_url or "dry run (set JIRA_BASE_URL to act)")
              + "; mail " + ("SendGrid" if settings.sendgrid_configured else f"to the outbox {settings.outbox_dir}"))
        procfile = parse_procfile((PROJECT_ROOT / "Procfile").read_text())
        manager = Manager()
        # The Procfile's `python` and `gunicorn` are this interpreter's (the project's venv).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        for name, cmd in procfile.processes.items():
            manager.add_process(name, cmd, env=env, cwd=str(PROJECT_ROOT))
        manager.loop()                  # returns once every process has exited
        return manager.returncode or 0
    finally:
        if embedded:
            _url_file().unlink(missing_ok=True)
            embedded.stop()
            print("relance: private Redis stopped", flush=True)


def _read_bodies(sources: list[str]) -> list[dict]:
    """Webhook bodies from files (a JSON object, an array of them, or JSON lines) or ``-`` (stdin).

    Raises ValueError naming the source and line of what is not JSON.
    """
    import json
    bodies = []
    for source in sources:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        name = "<stdin>" if source == "-" else source
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    bodies.append(json.loads(line))
                except ValueError as e:
                    raise ValueError(f"{name}:{number}: not JSON: {e}") from None
        if whole is not None:
            bodies.extend(whole if isinstance(whole, list) else [whole])
    for body in bodies:
        if not isinstance(body, dict):
            raise ValueError(f"every event must be a JSON object (a JIRA webhook body), got {type(body).__name__}")
    return bodies


def cmd_simulate(args) -> int:
    """Feed webhook bodies through the rules on a virtual clock; print what relance would do."""
    import json

    from workers.core.rules import load_rules, parse_duration
    from workers.core.simulate import render_text, simulate, time_zone
    try:
        rules = load_rules(args.rules)
    except RulesError as e:
        print(e, file=sys.stderr)
        return 1
    try:
        until = parse_duration(args.until)
        bodies = _read_bodies(args.events)
    except (ValueError, OSError) as e:
        print(f"relance: {e}", file=sys.stderr)
        return 2
    try:
        sim = simulate(rules, bodies, until)
    except PayloadError as e:
        print(f"relance: {e}", file=sys.stderr)
        return 2
    tz = time_zone(rules)
    if args.json:
        for line in sim.lines:
            print(json.dumps(line.as_json(tz), ensure_ascii=False))
    else:
        sys.stdout.write(render_text(sim, tz, args.verbose))
    return 0


def _url_file() -> Path:
    return PROJECT_ROOT / defaults.EMBEDDED_REDIS_DIR / "url"


def _redis_for_cli(settings: Settings):
    """REDIS_URL's Redis, else the private one `relance up` is running; ConfigError if neither."""
    from workers.stores.connection import redis_from_url
    url = settings.redis_url or (_url_file().read_text().strip() if _url_file().is_file() else None)
    if not url:
        raise ConfigError("REDIS_URL is not set and no `relance up` is running here")
    return redis_from_url(url, socket_timeout=defaults.REDIS_SOCKET_TIMEOUT_SECONDS)


def _failure_store(settings: Settings):
    from workers.failures import FailureStore
    return FailureStore(_redis_for_cli(settings), settings.retention)


def cmd_failures(args) -> int:
    """List the jobs that gave up after all their retries, newest first."""
    from datetime import datetime, timezone
    settings = Settings.from_env()
    failures = _failure_store(settings).list(limit=args.limit)
    if not failures:
        print("no failures")
        return 0
    print(f"{'JOB':<44} {'KIND':<9} {'TICKET':<12} {'TRIES':>5}  {'GAVE UP (UTC)':<19}  REASON")
    for f in failures:
        when = datetime.fromtimestamp(f.failed_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        reason = " ".join(f.reason.split())
        print(f"{f.job_id:<44} {f.kind:<9} {f.ticket or '-':<12} {f.attempts:>5}  {when:<19}  {reason[:100]}")
    return 0


def cmd_retry(args) -> int:
    """Queue failed work again with a fresh retry schedule; the effects ledger skips what was done."""
    from workers.stores.queue import make_queue
    settings = Settings.from_env()
    store = _failure_store(settings)
    queue = make_queue(store.redis, settings.queue_name)
    ids = [f.job_id for f in store.list(limit=store.count())] if args.all else args.job_ids
    if not ids:
        print("relance: give failed job ids (see `relance failures`) or --all", file=sys.stderr)
        return 0 if args.all else 2
    status = 0
    for job_id in ids:
        try:
            print(f"{job_id}: queued again as {store.retry(job_id, queue, settings.job_timeout)}")
        except KeyError:
            print(f"relance: no failure {job_id!r} (see `relance failures`)", file=sys.stderr)
            status = 1
    return status


def _relative(seconds: float) -> str:
    """``in 2 days`` / ``3 minutes ago`` for a moment ``seconds`` from now."""
    span = abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if span >= size:
            n = int(span // size)
            break
    else:
        unit, n = "second", int(span)
    words = f"{n} {unit}{'' if n == 1 else 's'}"
    return f"in {words}" if seconds >= 0 else f"{words} ago"


def _utc(epoch_seconds: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(epoch_seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ticket_key(value: str) -> str:
    from workers.core.events import ISSUE_KEY
    key = (value or "").strip().upper()
    if not ISSUE_KEY.fullmatch(key):
        raise argparse.ArgumentTypeError(f"{value!r} is not a JIRA issue key (like SUP-123)")
    return key


def cmd_timeline(args) -> int:
    """Print a ticket's timeline, oldest first: UTC time, kind, then the entry's fields."""
    import json

    from workers.stores.audit import Audit
    settings = Settings.from_env()
    entries = Audit(_redis_for_cli(settings), ttl=settings.retention).timeline(args.key)
    if not entries:
        print(f"relance: no timeline for {args.key} (never seen, or forgotten after the retention)",
              file=sys.stderr)
        return 1
    for entry in entries:
        fields = {k: v for k, v in entry.items() if k not in ("id", "kind")}
        when = _utc(int(entry["id"].split("-")[0]) / 1000)
        shown = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                         for k, v in fields.items())
        print(f"{when}  {entry['kind']:<17} {shown}".rstrip())
    return 0


def cmd_timers(args) -> int:
    """Print pending timers, soonest first: ticket, rule, due (UTC and relative), generation, and
    whether the timer is being fired (its job is queued or running) or parked (its job gave up)."""
    import time

    from workers.failures import FailureStore
    from workers.stores.timers import TimerStore, job_id, member
    settings = Settings.from_env()
    redis = _redis_for_cli(settings)
    store = TimerStore(redis)
    if args.key:
        timers = [t for t in store.pending(limit=store.count()) if t.ticket == args.key]
    else:
        timers = store.pending(limit=args.limit)
    if not timers:
        print(f"no pending timers{' for ' + args.key if args.key else ''}")
        return 0
    now = time.time()
    failures = FailureStore(redis, settings.retention)
    firing = store.firing([member(t.rule, t.ticket) for t in timers], now)
    print(f"{'TICKET':<14} {'RULE':<24} {'DUE (UTC)':<20} {'':<16} {'GENERATION':<16} NOTE")
    for t in timers:
        jid = job_id(member(t.rule, t.ticket), t.generation)
        note = ""
        if failures.get(jid) is not None:
            note = "parked: its job gave up (see relance failures; relance retry " + jid + ")"
        elif member(t.rule, t.ticket) in firing:
            note = "firing: claimed, its job is queued or running"
        print(f"{t.ticket:<14} {t.rule:<24} {_utc(t.due):<20} {_relative(t.due - now):<16} "
              f"{t.generation:<16} {note}".rstrip())
    return 0


def cmd_reconcile(args) -> int:
    """Ask JIRA for the tickets of the mapped statuses updated since ``--since`` and repair what
    relance missed (workers/reconcile.py): status changes are queued for the worker as deliveries,
    missing timers are armed. Exit 1 if JIRA could not be read."""
    from workers.context import Context
    from workers.exceptions import JiraError, TransientError
    from workers.reconcile import reconcile
    from workers.core.rules import parse_duration
    try:
        since = parse_duration(args.since)
    except ValueError as e:
        print(f"relance: --since: {e}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    if not settings.jira_configured:
        print("nothing to reconcile: JIRA is not configured (dry run)")
        return 0
    try:
        ctx = Context.build(settings, _redis_for_cli(settings))
    except RulesError as e:
        print(e, file=sys.stderr)
        return 1
    try:
        report = reconcile(ctx, since)
    except (JiraError, TransientError) as e:
        print(f"relance: JIRA: {e}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0


def _add_ops_commands(sub) -> None:
    """``timeline``, ``timers`` and ``reconcile``."""
    timeline = sub.add_parser("timeline", help="what relance recorded of one ticket, oldest first")
    timeline.add_argument("key", type=_ticket_key, metavar="KEY", help="a JIRA issue key, e.g. SUP-123")
    timeline.set_defaults(func=cmd_timeline)
    timers = sub.add_parser("timers", help="pending timers, soonest first")
    timers.add_argument("key", nargs="?", type=_ticket_key, metavar="KEY", help="only this ticket's")
    timers.add_argument("--limit", type=int, default=100)
    timers.set_defaults(func=cmd_timers)
    reconcile = sub.add_parser("reconcile", help="ask JIRA for tickets changed lately; repair what relance missed")
    reconcile.add_argument("--since", default="7d", help="how far back to look (default 7d; 30m, 12h, 2w...)")
    reconcile.set_defaults(func=cmd_reconcile)

WEBHOOK_EVENTS = ["jira:issue_created", "jira:issue_updated", "jira:issue_deleted", "comment_created"]
WEBHOOK_JQL_SECTION = "issue-related-events-section"     # where an admin webhook's JQL filter goes


def _jira_for_cli():
    """(settings, JiraClient) from the environment, as the service reads it; ConfigError without JIRA."""
    from workers.clients.jira import JiraClient
    settings = Settings.from_env()
    if not settings.jira_configured:
        raise ConfigError("JIRA_BASE_URL is not set: set it to your site (e.g. https://acme.atlassian.net), with "
                          "JIRA_USER_EMAIL and JIRA_API_TOKEN (Cloud) or JIRA_PAT (Data Center)")
    return settings, JiraClient(settings.jira_base_url, settings.jira_user_email, settings.reveal("jira_api_token"),
                                settings.reveal("jira_pat"))


def _credentials_hint(settings: Settings) -> str:
    if settings.jira_pat:
        return "check JIRA_PAT (a Data Center personal access token of an active user)"
    return ("check JIRA_USER_EMAIL and JIRA_API_TOKEN (an API token of that Atlassian account, from "
            "id.atlassian.com > Security > API tokens)")


def _status_names(statuses) -> dict[str, str]:
    """{casefolded name: name} of JIRA status objects."""
    return {s["name"].casefold(): s["name"] for s in statuses if isinstance(s, dict) and s.get("name")}


def _check_names(say, scope: str, known: dict[str, str], rules, path, warn: bool) -> None:
    """Say, for ``scope`` (the site, or a project) whose statuses are ``known``, which lifecycle states have
    a status there (an error for a state with none), and whether each rule's transition target is there."""
    from workers.core.rules import TransitionAction
    prefix = "statuses" if scope == "the site" else f"{scope}: statuses"
    there = "on the site" if scope == "the site" else f"in {scope}"
    for state, names in rules.statuses.items():
        present = [n for n in names if n.casefold() in known]
        missing = [n for n in names if n.casefold() not in known]
        if not present:
            say("error", f"{prefix}: no status of lifecycle state {state!r} exists {there} "
                         f"(looked for {', '.join(map(repr, names)) or 'none'}); add the name "
                         f"this site uses for it under 'statuses: {state}:' in {path}")
            continue
        say("ok", f"{prefix}: {state}: {_exist(present)}")
        if missing and warn:
            say("warning", f"{prefix}: {state}: {', '.join(map(repr, missing))} not on this site "
                           "(fine if they are another site's or language's names)")
    where = "" if scope == "the site" else f"{scope}: "
    for rule in rules.rules:
        for action in rule.do:
            target = action.transition
            if target is None:
                continue
            if isinstance(target, TransitionAction):
                names = rules.statuses.get(target.to_state, [])
                found = [n for n in names if n.casefold() in known]
                if found:
                    say("ok", f"{where}rule {rule.name!r}: transition to state {target.to_state!r}: {_exist(found)}")
                else:
                    say("error", f"{where}rule {rule.name!r}: transition to state {target.to_state!r}: none of "
                                 f"its statuses ({', '.join(map(repr, names))}) exists {there}")
            elif target.casefold() in known:
                say("ok", f"{where}rule {rule.name!r}: transition to {target!r}: the status exists")
            else:
                say("error", f"{where}rule {rule.name!r}: transition to {target!r}: no such status {there} "
                             f"(it has {', '.join(sorted(map(repr, known.values())))})")


def _exist(names) -> str:
    return f"{', '.join(map(repr, names))} {'exists' if len(names) == 1 else 'exist'}"


def cmd_jira_check(args) -> int:
    """Check the credentials, that the rules file's status names exist on the site, and that each
    transition a rule makes leads to a status the site has. Exit 1 on any error, 2 on bad configuration."""
    from workers.exceptions import JiraError, TransientError
    from workers.core.rules import load_rules
    settings, jira = _jira_for_cli()
    path = Path(args.rules) if args.rules else settings.rules_file
    try:
        rules = load_rules(path)
    except RulesError as e:
        raise ConfigError(f"the rules file is not valid (see `relance check`):\n{e}") from None
    errors = warnings = 0

    def say(kind: str, text: str) -> None:
        nonlocal errors, warnings
        errors += kind == "error"
        warnings += kind == "warning"
        print(f"{kind + ':':<8} {text}")

    print(f"JIRA {settings.jira_base_url}, rules {path}")
    try:
        me = jira.myself()
    except JiraError as e:
        if e.status in (401, 403):
            say("error", f"credentials: JIRA refused them ({e}); {_credentials_hint(settings)}")
        else:
            say("error", f"credentials: GET /rest/api/2/myself failed: {e}")
        return 1
    except TransientError as e:
        say("error", f"JIRA did not answer: {e}")
        return 1
    who = me.get("displayName") or me.get("name") or me.get("accountId")
    say("ok", f"credentials: relance acts as {who} ({me.get('emailAddress') or me.get('name') or me.get('accountId')})")
    try:
        site = jira.statuses()
    except (JiraError, TransientError) as e:
        say("error", f"statuses: GET /rest/api/2/status failed: {e}")
        return 1
    _check_names(say, "the site", _status_names(site), rules, path, warn=True)
    for project in args.project or ():
        try:
            types = jira.project_statuses(project)
        except JiraError as e:
            say("error", f"project {project}: GET /rest/api/2/project/{project}/statuses failed ({e}): "
                         "is the key right, and may the account browse the project?")
            continue
        except TransientError as e:
            say("error", f"project {project}: JIRA did not answer: {e}")
            continue
        _check_names(say, f"project {project}", _status_names(s for t in types for s in t.get("statuses") or []),
                     rules, path, warn=False)
    _check_reachable(say, jira, rules)
    print("not checked: workflows themselves (they need JIRA administrator APIs): a transition is checked on a "
          "ticket that is in the status it starts from, as relance's account sees it"
          + ("" if args.project else "; nor which statuses each project's workflows use (give --project KEY)")
          + "; a transition JIRA does not offer when a rule fires is recorded on the ticket's timeline")
    print(f"{'FAILED' if errors else 'OK'}: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def _check_reachable(say, jira, rules) -> None:
    """For each rule's transition, from each status of the states it fires in: is there a transition
    JIRA offers relance's account into the target? Looked at on one ticket in that status (JIRA offers
    transitions per issue; workflows themselves need administrator APIs)."""
    from workers.core.rules import TransitionAction, names
    seen: dict[str, list[dict] | None] = {}
    for rule in rules.rules:
        targets = [a.transition for a in rule.do if a.transition]
        states = names(rule.conditions.state) if rule.conditions and rule.conditions.state else rule.when.states
        for target in targets:
            wanted = set(rules.statuses[target.to_state]) if isinstance(target, TransitionAction) else {target}
            shown = target.to_state if isinstance(target, TransitionAction) else target
            for state in states:
                for status in rules.statuses.get(state, ()):
                    if status not in seen:
                        seen[status] = _transitions_from(jira, status)
                    found = seen[status]
                    if found is None:
                        print(f"not checked: rule {rule.name!r}: no ticket is in {status!r} to see its transitions")
                        continue
                    key, offered = found
                    leads = {(t.get("to") or {}).get("name", "") for t in offered}
                    if {w.casefold() for w in wanted} & {x.casefold() for x in leads}:
                        say("ok", f"rule {rule.name!r}: {status!r} -> {shown!r} (a transition JIRA offers on {key})")
                    else:
                        say("error", f"rule {rule.name!r}: from {status!r} no transition leads to {shown!r} "
                                     f"(on {key} JIRA offers: {', '.join(sorted(leads)) or 'none'})")


def _transitions_from(jira, status: str):
    """(key, transitions offered) of one ticket in ``status``, or None if no ticket is in it."""
    from workers.exceptions import JiraError, TransientError
    quoted = status.replace("\\", "\\\\").replace('"', '\\"')
    try:
        issue = next(iter(jira.search(f'status in ("{quoted}") AND updated >= "-3650d" ORDER BY updated DESC',
                                      ["status"], page_size=1)), None)
    except (JiraError, TransientError):
        return None
    if issue is None:
        return None
    return issue["key"], jira.transitions(issue["key"])


def _with_token(url: str, token: str) -> str:
    """``url`` with ``token=<token>`` in its query (replacing a token already there)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"] + [("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _without_query(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit
    return urlunsplit(urlsplit(url)._replace(query="", fragment="")).rstrip("/")


def _shown(url: str) -> str:
    """``url`` with its token value hidden, for printing."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
    parts = urlsplit(url)
    query = [(k, "***" if k == "token" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def cmd_jira_register_webhook(args) -> int:
    """Create relance's admin webhook on the JIRA site, or update the one of the same name or URL."""
    from urllib.parse import urlsplit

    from workers.exceptions import JiraError, TransientError
    settings, jira = _jira_for_cli()
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the webhook URL must be http(s)://<your-app>/webhooks/jira, got {args.url!r}")
    if not parts.path.rstrip("/").endswith("/webhooks/jira"):
        print(f"relance: warning: relance takes deliveries at /webhooks/jira; {args.url} does not end so",
              file=sys.stderr)
    secret, token = settings.reveal("jira_webhook_secret"), settings.reveal("jira_webhook_token")
    url = _with_token(args.url, token) if token else args.url
    body = {"name": args.name, "url": url, "events": list(WEBHOOK_EVENTS),
            "filters": {WEBHOOK_JQL_SECTION: args.jql or ""}, "excludeBody": False}
    if secret:
        body["secret"] = secret
    if not (secret or token):
        print("relance: warning: neither JIRA_WEBHOOK_SECRET nor JIRA_WEBHOOK_TOKEN is set here: the webhook "
              "is registered unsigned, and relance's web process refuses to start with JIRA configured and no "
              "way to authenticate deliveries (README: Configure)", file=sys.stderr)
    try:
        existing = jira.webhooks()
        same = [w for w in existing if isinstance(w, dict) and w.get("name") == args.name] or \
               [w for w in existing if isinstance(w, dict) and w.get("url")
                and _without_query(w["url"]) == _without_query(args.url)]
        if same:
            webhook_id = str(same[0].get("self", "")).rstrip("/").rsplit("/", 1)[-1]
            kept = (same[0].get("filters") or {}).get(WEBHOOK_JQL_SECTION) if args.jql is None else None
            if kept:                    # no --jql: keep the filter the webhook has
                body["filters"][WEBHOOK_JQL_SECTION] = args.jql = kept
            result = jira.update_webhook(webhook_id, body)
            verb = f"updated webhook {webhook_id}"
            for other in same[1:]:
                print(f"relance: warning: another webhook matches too, left as it is: {other.get('name')!r} "
                      f"{other.get('self')}", file=sys.stderr)
        else:
            result = jira.create_webhook(body)
            verb = "created webhook " + str((result or {}).get("self", "")).rstrip("/").rsplit("/", 1)[-1]
    except JiraError as e:
        if e.status == 401:
            print(f"relance: JIRA refused the credentials ({e}); {_credentials_hint(settings)}", file=sys.stderr)
        elif e.status == 403:
            print(f"relance: JIRA answered 403 ({e}): registering a webhook needs a JIRA administrator (the "
                  "'Jira Administrators' global permission). Run this with an administrator's credentials, or "
                  "create the webhook by hand as docs/jira.md says", file=sys.stderr)
        elif e.status == 404:
            print(f"relance: this JIRA does not serve /rest/webhooks/1.0/webhook ({e}); create the webhook by "
                  "hand as docs/jira.md says", file=sys.stderr)
        else:
            print(f"relance: {e}", file=sys.stderr)
        return 1
    except TransientError as e:
        print(f"relance: JIRA did not answer: {e}", file=sys.stderr)
        return 1
    print(f"{verb} {args.name!r}: {_shown(url)}")
    print(f"  events: {', '.join(WEBHOOK_EVENTS)}")
    print(f"  JQL filter: {args.jql or '(none: every issue)'}")
    how = (["signed with JIRA_WEBHOOK_SECRET (X-Hub-Signature)"] if secret else []) \
        + (["JIRA_WEBHOOK_TOKEN in the URL"] if token else [])
    print(f"  authentication: {' and '.join(how) or 'none'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="relance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run web + worker (+ a private Redis when REDIS_URL is unset)")
    up.add_argument("--port", type=int, default=5000)
    up.set_defaults(func=cmd_up)
    worker = sub.add_parser("worker", help="run one worker (jobs and due timers)")
    worker.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    worker.set_defaults(func=cmd_worker)
    check = sub.add_parser("check", help="validate the rules file")
    check.add_argument("rules", nargs="?", help="path (default: $RULES_FILE or rules.yaml)")
    check.set_defaults(func=cmd_check)
    preview = sub.add_parser("preview", help="render email templates with sample data to files")
    preview.add_argument("template", nargs="*", help="template names (default: all)")
    preview.add_argument("--locale", action="append", help="locale, e.g. fr or fr_FR (repeatable; default: all)")
    preview.add_argument("--out", default=str(PROJECT_ROOT / ".relance" / "preview"), help="output folder")
    preview.set_defaults(func=cmd_preview)
    simulate = sub.add_parser("simulate", help="run webhook bodies through rules on a virtual clock")
    simulate.add_argument("rules", help="the rules file")
    simulate.add_argument("events", nargs="+", help="files of webhook bodies (JSON, array or JSON lines), or -")
    simulate.add_argument("--json", action="store_true", help="one JSON object a line")
    simulate.add_argument("--verbose", action="store_true", help="also rules skipped because the event is not theirs")
    simulate.add_argument("--until", default="30d", help="how long to run after the last event (default 30d)")
    simulate.set_defaults(func=cmd_simulate)
    failures = sub.add_parser("failures", help="list the jobs that gave up after all their retries")
    failures.add_argument("--limit", type=int, default=100)
    failures.set_defaults(func=cmd_failures)
    retry = sub.add_parser("retry", help="queue failed jobs again")
    retry.add_argument("job_ids", nargs="*", metavar="JOB", help="job ids from `relance failures`")
    retry.add_argument("--all", action="store_true", help="every failed job")
    retry.set_defaults(func=cmd_retry)
    _add_ops_commands(sub)
    jira = sub.add_parser("jira", help="set up and check the JIRA side (credentials, statuses, webhook)")
    jira_sub = jira.add_subparsers(dest="jira_command", required=True)
    jira_check = jira_sub.add_parser("check", help="check credentials, status names and transition targets")
    jira_check.add_argument("rules", nargs="?", help="rules file (default: $RULES_FILE or rules.yaml)")
    jira_check.add_argument("--project", action="append", metavar="KEY",
                            help="also check the statuses of this project's workflows (repeatable)")
    jira_check.set_defaults(func=cmd_jira_check)
    register = jira_sub.add_parser("register-webhook", help="create or update relance's webhook (JIRA admin)")
    register.add_argument("url", metavar="URL", help="where JIRA posts, e.g. https://relance.example.com/webhooks/jira")
    register.add_argument("--jql", help='JQL filter of the issues to send, e.g. "project = SUP" (default: every '
                          "issue; on an update, the filter the webhook has)")
    register.add_argument("--name", default="relance", help="the webhook's name in JIRA (default: relance)")
    register.set_defaults(func=cmd_jira_register_webhook)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"relance: configuration error: {e}", file=sys.stderr)
        return 2
    except RedisError as e:
        print(f"relance: Redis unavailable: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:           # Ctrl-C before a command installed its own handling
        return 130
    except BrokenPipeError:             # `relance simulate ... | head`
        sys.stderr.close()
        return 0
