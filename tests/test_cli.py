"""The command line: exit codes and messages a user (or a deploy) sees."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from relance.embedded import free_port
from workers.settings import PROJECT_ROOT


def relance(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "relance", *args], cwd=PROJECT_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_check_accepts_the_shipped_rules():
    result = relance("check")
    assert result.returncode == 0
    assert "OK, 10 rules (3 timed, 1 on email events), 5 lifecycle states; 8 email templates render in en, fr" \
        in result.stdout


def test_check_reports_every_problem_with_its_line(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text((PROJECT_ROOT / "rules.yaml").read_text()
                   .replace("after: 5d", "after: soon").replace("add_label: escalated", "add_label: [x]"))
    result = relance("check", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{bad}:55: rules[5].after: invalid duration 'soon': use 30s, 15m, 72h, 5d (or a sum like 1d12h)"
    assert lines[1].startswith(f"{bad}:73: rules[7].do[1].add_label: ")


def test_a_worker_refuses_to_start_on_a_bad_rules_file(tmp_path, redis_server):
    bad = tmp_path / "rules.yaml"
    bad.write_text("statuses: {open: [Open]}\nrules:\n  - name: x\n    when: {entered: nowhere}\n    do: [{comment: hi}]\n")
    result = relance("worker", "--burst", env={"RULES_FILE": str(bad), "REDIS_URL": redis_server.url})
    assert result.returncode == 1
    assert f"{bad}:4: rules[0].when: state 'nowhere' is not defined under 'statuses'" in result.stderr


def test_bad_configuration_exits_2_with_the_reason():
    result = relance("check", env={"JIRA_BASE_URL": "https://acme.atlassian.net"})
    assert result.returncode == 2
    assert "JIRA_BASE_URL is set but no credentials" in result.stderr


def test_check_renders_every_template_and_names_an_unknown_variable(tmp_path):
    import shutil
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", templates)
    txt = templates / "emails" / "fr" / "escalation.txt"
    txt.write_text(txt.read_text() + "\n{{ customer_nmae }}\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text((PROJECT_ROOT / "rules.yaml").read_text())
    env = {"RELANCE_TEMPLATES_DIR": str(templates)}
    result = relance("check", str(rules), env=env)
    assert result.returncode == 1
    assert "emails/fr/escalation.txt" in result.stderr and "'customer_nmae' is undefined" in result.stderr


def test_check_renders_jira_and_chat_templates_and_names_the_file_of_an_unknown_variable(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", templates)
    note = templates / "jira" / "fr" / "escalation_note.txt"
    note.write_text(note.read_text() + "Rouvert {{ reopend_by }}.\n")
    (templates / "chat" / "en" / "daily.txt").write_text("{{ ticket.key }}\n{{ ticket.sumary }}\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text((PROJECT_ROOT / "rules.yaml").read_text())
    result = relance("check", str(rules), env={"RELANCE_TEMPLATES_DIR": str(templates)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert f"{templates}/jira/fr/escalation_note.txt:4: UndefinedError: 'reopend_by' is undefined" in lines
    assert any(line.startswith(f"{templates}/chat/en/daily.txt:2: UndefinedError: ") and "sumary" in line
               for line in lines), lines
    assert len(lines) == 2, lines        # the other templates render


def test_check_says_which_text_templates_render(tmp_path):
    result = relance("check")
    assert result.returncode == 0, result.stderr
    assert "text templates render too: jira/email_bounced (en, fr), jira/email_reply (en, fr), " \
           "jira/escalation_note (en, fr), chat/escalation_chat (en, fr)" in result.stdout


def test_check_names_a_syntax_error_in_a_chat_template(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", templates)
    (templates / "chat" / "fr" / "escalation_chat.txt").write_text("{{ ticket.key }}\n{% if ticket.priority %}\n")
    result = relance("check", env={"RELANCE_TEMPLATES_DIR": str(templates)})
    assert result.returncode == 1
    assert result.stderr.startswith(f"{templates}/chat/fr/escalation_chat.txt:2: TemplateSyntaxError: ")


def test_preview_writes_jira_and_chat_templates_as_text(tmp_path):
    result = relance("preview", "escalation_note", "escalation_chat", "--locale", "fr", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    note = (tmp_path / "jira" / "fr" / "escalation_note.txt").read_text()
    assert note.startswith("(i) Ticket rouvert par Jeanne Martin")
    chat = (tmp_path / "chat" / "fr" / "escalation_chat.txt").read_text().splitlines()
    assert chat[0].startswith("Escalade\xa0: SUP-42 rouvert") and chat[1].endswith("/browse/SUP-42")
    assert not (tmp_path / "jira" / "en").exists() and not (tmp_path / "fr" / "escalation_note.html").exists()
    assert len(result.stdout.strip().splitlines()) == 2


def test_preview_writes_html_and_text_for_each_template(tmp_path):
    result = relance("preview", "feedback_request", "auto_closed", "--locale", "fr", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "fr" / "feedback_request.html").read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<html")
    assert (tmp_path / "fr" / "auto_closed.txt").read_text().startswith("Subject: [SUP-42] ")
    assert len(result.stdout.strip().splitlines()) == 2


def test_preview_refuses_an_unknown_template(tmp_path):
    result = relance("preview", "nope", "--out", str(tmp_path))
    assert result.returncode == 2 and "no template nope" in result.stderr


def copy_of_the_project(target: Path) -> Path:
    """The project without its venv, git and run data: its private Redis keeps data in target/.relance."""
    shutil.copytree(PROJECT_ROOT, target, ignore=shutil.ignore_patterns(
        ".venv", ".git", ".relance", "outbox", "tests", "__pycache__", ".hypothesis", "*.egg-info", "build"))
    return target


def process_is_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")    # a zombie is gone too
    except FileNotFoundError:
        return True


def redis_server_pid(port: int) -> int:
    """The pid of the redis-server on ``port`` (it retitles itself ``redis-server 127.0.0.1:<port>``)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"redis-server" in title and re.search(rb"[: ]%d\b" % port, title):
            return int(cmdline.parent.name)
    raise AssertionError(f"no redis-server on port {port}")


def test_ctrl_c_stops_web_and_worker_then_redis_without_tracebacks(tmp_path):
    root, port = copy_of_the_project(tmp_path / "relance"), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PORT")}
    env |= {"RULES_FILE": str(root / "rules.yaml"), "OUTBOX_DIR": str(tmp_path / "outbox"), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen([sys.executable, "-m", "relance", "up", "--port", str(port)], cwd=root, env=env,
                              stdout=out, stderr=subprocess.STDOUT, process_group=0)   # as a terminal runs it
    redis_pid = None
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                assert up.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)     # a child process's port: there is no event to await
        redis_port = int(re.search(r"private Redis on redis://127.0.0.1:(\d+)/", log.read_text()).group(1))
        redis_pid = redis_server_pid(redis_port)
        os.killpg(up.pid, signal.SIGINT)                  # Ctrl-C
        assert up.wait(timeout=15) == 130
    finally:
        if up.poll() is None:   # the test failed first: honcho's processes have sessions of their own, so
            os.killpg(up.pid, signal.SIGTERM)             # let honcho stop them, and only then force it
            try:
                up.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
        if redis_pid and not process_is_gone(redis_pid):
            os.kill(redis_pid, signal.SIGKILL)
            raise AssertionError("the private redis-server outlived `relance up`")
    output = log.read_text()
    assert "Traceback" not in output and "Error" not in output, output
    lines = output.splitlines()
    stopped = [next(i for i, line in enumerate(lines) if marker in line)
               for marker in ("web stopped", "worker stopped", "relance: private Redis stopped")]
    assert stopped[2] > max(stopped[:2]), output         # Redis last
    assert (root / ".relance" / "redis").is_dir()         # the copy's, not the developer's


def test_failures_lists_jobs_that_gave_up_and_retry_queues_them_again(redis_server, redis):
    from workers.failures import FailureStore
    from workers.stores.queue import make_queue
    FailureStore(redis).record("delivery-d1", "workers.jobs.process_delivery", ["d1"], "SUP-1",
                               "TransientError: JIRA GET issue/SUP-1: 503 Service Unavailable", 10)
    env = {"REDIS_URL": redis_server.url}
    listed = relance("failures", env=env)
    assert listed.returncode == 0
    [header, row] = listed.stdout.strip().splitlines()
    assert header.split()[:4] == ["JOB", "KIND", "TICKET", "TRIES"]
    assert row.split()[:4] == ["delivery-d1", "delivery", "SUP-1", "10"] and "503 Service Unavailable" in row

    retried = relance("retry", "delivery-d1", env=env)
    assert retried.returncode == 0 and "delivery-d1: queued again as delivery-d1_retry" in retried.stdout
    [job_id] = make_queue(redis).job_ids
    assert job_id.startswith("delivery-d1_retry")
    assert relance("failures", env=env).stdout.strip() == "no failures"


def test_retry_of_an_unknown_job_and_a_cli_without_redis_exit_non_zero(redis_server, redis):
    unknown = relance("retry", "delivery-nope", env={"REDIS_URL": redis_server.url})
    assert unknown.returncode == 1 and "no failure 'delivery-nope'" in unknown.stderr
    down = relance("failures", env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.returncode == 3 and "Redis unavailable" in down.stderr


def test_check_warns_of_a_chat_webhook_variable_that_is_not_set(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text((PROJECT_ROOT / "rules.yaml").read_text().replace(
        "      - add_label: escalated\n",
        "      - add_label: escalated\n      - notify: {url_env: RELANCE_CHAT_URL_UNSET, template: escalation_chat}\n"))
    result = relance("check", str(rules), env={"RELANCE_CHAT_URL_UNSET": ""})
    assert result.returncode == 0 and "OK" in result.stdout
    assert "rule 'escalate-reopened': RELANCE_CHAT_URL_UNSET is not set here" in result.stderr
    quiet = relance("check", str(rules), env={"RELANCE_CHAT_URL_UNSET": "https://hooks.example/x"})
    assert quiet.returncode == 0 and quiet.stderr == ""
