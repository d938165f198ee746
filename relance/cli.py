"""``python -m relance <command>``.

up      the whole service: private Redis (unless REDIS_URL), web and worker from the Procfile
worker  one worker process (what the Procfile's ``worker:`` runs)
check   validate the rules file and render every email template; exit 1 with line-numbered errors
preview render email templates with sample data to HTML and text files
simulate run webhook bodies through a rules file on a virtual clock (no Redis, no network)
failures list the jobs that gave up after all their retries
retry   queue failed jobs again (ids from ``failures``, or --all)
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

    from workers.emails import TEMPLATE_NAMES, Renderer, template_location
    from workers.rules import load_rules
    from workers.samples import render_samples, render_text_samples, text_templates
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
    rendered = "".join(f", {name} ({', '.join(locales)})" for name, locales in texts.items())
    print(f"{path}: OK, {len(rules.rules)} rules ({timed} timed), {len(rules.statuses)} lifecycle states; "
          f"{len(names)} email templates render in {', '.join(renderer.locales())}"
          + (f"; text templates render too: {rendered[2:]}" if texts else ""))
    return 0


def cmd_preview(args) -> int:
    """Render templates with sample data to HTML and text files a browser and an editor open: emails as
    ``<out>/<locale>/<name>.{html,txt}``, JIRA comments and chat messages as ``<out>/<folder>/<locale>/<name>.txt``."""
    settings = Settings.from_env()
    from workers.emails import TEMPLATE_NAMES, Renderer
    from workers.rules import load_rules
    from workers.samples import render_samples, render_text_samples, text_templates
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

    from workers.rules import load_rules, parse_duration
    from workers.simulate import render_text, simulate, time_zone
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
    from workers.connection import redis_from_url
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
    from workers.queue import make_queue
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
