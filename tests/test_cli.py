"""The command line: exit codes and messages a user (or a deploy) sees."""

import os
import subprocess
import sys

from workers.settings import PROJECT_ROOT


def relance(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "relance", *args], cwd=PROJECT_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_check_accepts_the_shipped_rules():
    result = relance("check")
    assert result.returncode == 0
    assert "OK, 6 rules (2 timed), 5 lifecycle states; 6 email templates render in en, fr" in result.stdout


def test_check_reports_every_problem_with_its_line(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text((PROJECT_ROOT / "rules.yaml").read_text()
                   .replace("after: 5d", "after: soon").replace("add_label: escalated", "add_label: [x]"))
    result = relance("check", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{bad}:40: rules[4].after: invalid duration 'soon': use 30s, 15m, 72h, 5d (or a sum like 1d12h)"
    assert lines[1].startswith(f"{bad}:49: rules[5].do[1].add_label: ")


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
