"""`relance jira check` and `relance jira register-webhook`, run as a user runs them, against the JIRA stand-in."""

import os
import subprocess
import sys

import pytest

from tests.standins import JiraStandIn
from tests.standins.jira import CONTRACT, contract_validator
from workers.settings import PROJECT_ROOT

APP_URL = "https://relance.example.com/webhooks/jira"
EVENTS = ["jira:issue_created", "jira:issue_updated", "jira:issue_deleted", "comment_created"]
JIRA_VARIABLES = ("JIRA_BASE_URL", "JIRA_USER_EMAIL", "JIRA_API_TOKEN", "JIRA_PAT", "JIRA_WEBHOOK_SECRET",
                  "JIRA_WEBHOOK_TOKEN", "RULES_FILE")


def relance(*args, env=None):
    base = {k: v for k, v in os.environ.items() if k not in JIRA_VARIABLES}
    return subprocess.run([sys.executable, "-m", "relance", *args], cwd=PROJECT_ROOT, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def jira_env(jira, **more):
    return {"JIRA_BASE_URL": jira.url, "JIRA_USER_EMAIL": jira.email, "JIRA_API_TOKEN": jira.api_token, **more}


@pytest.fixture
def site():
    with JiraStandIn() as server:
        yield server


def test_the_stand_in_lists_its_statuses_as_the_published_getStatuses_schema_says(site):
    import requests
    response = requests.get(f"{site.url}/rest/api/2/status", auth=(site.email, site.api_token), timeout=10)
    assert response.status_code == 200
    schema = CONTRACT["operations"]["getStatuses"]["response"]["schema"]
    assert not list(contract_validator(schema).iter_errors(response.json()))
    assert {s["name"] for s in response.json()} == set(site.workflow.statuses)
    assert all(s["id"] and s["statusCategory"]["key"] for s in response.json())


def test_check_passes_on_a_good_site_and_warns_of_names_of_other_sites(site):
    result = relance("jira", "check", env=jira_env(site))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok:      credentials: relance acts as Relance" in result.stdout
    assert "ok:      statuses: resolved: 'Resolved' exists" in result.stdout
    assert "warning: statuses: resolved: 'Résolu' not on this site" in result.stdout
    assert "ok:      rule 'auto-close': transition to 'Closed': the status exists" in result.stdout
    assert "ok:      rule 'customer-answered': transition to state 'open': 'Open', 'In Progress' exist" \
        in result.stdout
    assert "not checked: rule 'auto-close': no ticket is in 'Resolved' to see its transitions" in result.stdout
    assert "not checked: workflows themselves" in result.stdout and "(give --project KEY)" in result.stdout
    assert result.stdout.strip().endswith("OK: 0 error(s), 5 warning(s)")


def test_check_looks_at_the_transitions_jira_offers_on_a_ticket_in_each_status(rules_file):
    workflow = {"Open": {"Ask for feedback": "Waiting for feedback", "Resolve": "Resolved"},
                "Waiting for feedback": {"Give feedback": "Open"},
                "Resolved": {"Reopen": "Reopened"},                       # nothing leads to Closed
                "Reopened": {"Resolve": "Resolved"}, "Closed": {}}
    with JiraStandIn(workflow=workflow) as jira:
        jira.add_user(account_id="acc-jane", email="jane@customer.example")
        jira.add_issue("SUP-1", status="Resolved", reporter="acc-jane")
        jira.add_issue("SUP-2", status="Waiting for feedback", reporter="acc-jane")
        result = relance("jira", "check", env=jira_env(jira))
    assert result.returncode == 1
    assert "error:   rule 'auto-close': from 'Resolved' no transition leads to 'Closed' (on SUP-1 JIRA offers: " \
           "Reopened)" in result.stdout
    assert "ok:      rule 'customer-answered': 'Waiting for feedback' -> 'open' (a transition JIRA offers on SUP-2)" \
        in result.stdout


def test_check_reports_a_state_without_any_status_and_a_missing_transition_target(site, rules_file):
    text = rules_file.read_text()
    text = text.replace('resolved: ["Resolved", "Résolu"]', 'resolved: ["Solved", "Résolu"]')
    text = text.replace("- transition: Closed ", "- transition: Archived ")
    rules_file.write_text(text)
    result = relance("jira", "check", env=jira_env(site, RULES_FILE=str(rules_file)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("error:   statuses: no status of lifecycle state 'resolved' exists on the site "
            "(looked for 'Solved', 'Résolu')") in result.stdout
    assert "error:   rule 'auto-close': transition to 'Archived': no such status on the site" in result.stdout
    assert "FAILED: 2 error(s)" in result.stdout


def test_check_reports_a_to_state_transition_whose_state_has_no_status_on_the_site(site, rules_file):
    rules_file.write_text(rules_file.read_text().replace(
        'open: ["Open", "Acknowledged", "In Progress", "Ouvert", "En cours"]', 'open: ["Ouvert", "En cours"]'))
    result = relance("jira", "check", str(rules_file), env=jira_env(site))
    assert result.returncode == 1
    assert ("error:   rule 'customer-answered': transition to state 'open': none of its statuses "
            "('Ouvert', 'En cours') exists on the site") in result.stdout


def test_check_of_a_project_reports_the_statuses_its_workflows_lack(site):
    site.add_project("SUP")
    site.add_project("OPS", statuses=["Open", "In Progress", "Resolved", "Reopened"])
    result = relance("jira", "check", "--project", "SUP", "--project", "OPS", "--project", "NOPE",
                     env=jira_env(site))
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "ok:      project SUP: statuses: closed: 'Closed' exists" in out
    assert "ok:      project SUP: rule 'auto-close': transition to 'Closed': the status exists" in out
    assert "error:   project OPS: statuses: no status of lifecycle state 'closed' exists in project OPS" in out
    assert "error:   project OPS: statuses: no status of lifecycle state 'waiting_for_feedback'" in out
    assert "error:   project OPS: rule 'auto-close': transition to 'Closed': no such status in project OPS" in out
    assert "error:   project NOPE: GET /rest/api/2/project/NOPE/statuses failed" in out
    assert "No project could be found with key 'NOPE'." in out
    assert "(give --project KEY)" not in out
    assert "FAILED: 4 error(s), 5 warning(s)" in out


def test_the_stand_in_lists_a_projects_statuses_as_the_published_getAllStatuses_schema_says(site):
    import requests
    site.add_project("OPS", statuses=["Open", "Closed"])
    response = requests.get(f"{site.url}/rest/api/2/project/OPS/statuses", auth=(site.email, site.api_token),
                            timeout=10)
    assert response.status_code == 200
    schema = CONTRACT["operations"]["getAllStatuses"]["response"]["schema"]
    assert not list(contract_validator(schema).iter_errors(response.json()))
    assert [s["name"] for s in response.json()[0]["statuses"]] == ["Open", "Closed"]


def test_check_with_bad_credentials_says_which_to_fix(site):
    result = relance("jira", "check", env=jira_env(site, JIRA_API_TOKEN="wrong"))
    assert result.returncode == 1
    assert "error:   credentials: JIRA refused them" in result.stdout
    assert "401" in result.stdout and "check JIRA_USER_EMAIL and JIRA_API_TOKEN" in result.stdout
    with JiraStandIn(pat="good-pat") as dc:
        result = relance("jira", "check", env={"JIRA_BASE_URL": dc.url, "JIRA_PAT": "bad-pat"})
    assert result.returncode == 1 and "check JIRA_PAT" in result.stdout


def test_check_on_a_data_center_site_with_a_pat(site):
    with JiraStandIn(pat="good-pat") as dc:
        result = relance("jira", "check", env={"JIRA_BASE_URL": dc.url, "JIRA_PAT": "good-pat"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_jira_base_url_it_is_a_configuration_error():
    for command in (["check"], ["register-webhook", APP_URL]):
        result = relance("jira", *command)
        assert result.returncode == 2
        assert "JIRA_BASE_URL is not set" in result.stderr


def test_register_webhook_creates_once_then_updates_the_same_webhook(site):
    env = jira_env(site, JIRA_WEBHOOK_SECRET="s3cret-value")
    first = relance("jira", "register-webhook", APP_URL, "--jql", "project = SUP", env=env)
    assert first.returncode == 0, first.stderr
    assert "created webhook 1 'relance'" in first.stdout
    assert "s3cret-value" not in first.stdout + first.stderr
    [hook] = site.webhooks
    assert hook["name"] == "relance" and hook["url"] == APP_URL and hook["events"] == EVENTS
    assert hook["filters"] == {"issue-related-events-section": "project = SUP"}
    assert site.webhook_secrets["1"] == "s3cret-value"
    [post] = [r for r in site.requests if r.method == "POST"]
    assert post.path == "/rest/webhooks/1.0/webhook" and post.json["secret"] == "s3cret-value"
    assert post.json["excludeBody"] is False

    second = relance("jira", "register-webhook", APP_URL, env=env)      # no --jql: the filter is kept
    assert second.returncode == 0, second.stderr
    assert "updated webhook 1 'relance'" in second.stdout
    [hook] = site.webhooks
    assert hook["filters"] == {"issue-related-events-section": "project = SUP"}
    assert [r.path for r in site.requests if r.method == "PUT"] == ["/rest/webhooks/1.0/webhook/1"]

    third = relance("jira", "register-webhook", APP_URL, "--jql", "project in (SUP, HELP)", env=env)
    assert third.returncode == 0 and len(site.webhooks) == 1
    assert site.webhooks[0]["filters"]["issue-related-events-section"] == "project in (SUP, HELP)"


def test_register_webhook_finds_a_webhook_of_the_same_url_under_another_name(site):
    site.add_webhook("made by hand", APP_URL + "?token=old", events=["jira:issue_updated"])
    result = relance("jira", "register-webhook", APP_URL, "--name", "relance-prod",
                     env=jira_env(site, JIRA_WEBHOOK_SECRET="x"))
    assert result.returncode == 0, result.stderr
    [hook] = site.webhooks
    assert hook["name"] == "relance-prod" and hook["url"] == APP_URL and hook["events"] == EVENTS


def test_register_webhook_puts_the_token_in_the_url_for_data_center(site):
    result = relance("jira", "register-webhook", APP_URL, env=jira_env(site, JIRA_WEBHOOK_TOKEN="tok en/1"))
    assert result.returncode == 0, result.stderr
    [hook] = site.webhooks
    assert hook["url"] == APP_URL + "?token=tok+en%2F1"
    assert site.webhook_secrets["1"] is None
    assert "tok+en" not in result.stdout and "tok en" not in result.stdout and "token=***" in result.stdout
    again = relance("jira", "register-webhook", APP_URL, env=jira_env(site, JIRA_WEBHOOK_TOKEN="new"))
    assert again.returncode == 0 and [h["url"] for h in site.webhooks] == [APP_URL + "?token=new"]


def test_register_webhook_without_admin_rights_exits_non_zero_and_says_so():
    with JiraStandIn(admin=False) as site:
        result = relance("jira", "register-webhook", APP_URL, env=jira_env(site, JIRA_WEBHOOK_SECRET="x"))
        assert site.webhooks == []
    assert result.returncode == 1
    assert "403" in result.stderr and "needs a JIRA administrator" in result.stderr and "docs/jira.md" in result.stderr


def test_register_webhook_with_bad_credentials_says_which_to_fix(site):
    result = relance("jira", "register-webhook", APP_URL, env=jira_env(site, JIRA_API_TOKEN="wrong"))
    assert result.returncode == 1
    assert "check JIRA_USER_EMAIL and JIRA_API_TOKEN" in result.stderr


def test_register_webhook_without_a_secret_or_token_warns(site):
    result = relance("jira", "register-webhook", APP_URL, env=jira_env(site))
    assert result.returncode == 0
    assert "neither JIRA_WEBHOOK_SECRET nor JIRA_WEBHOOK_TOKEN is set" in result.stderr


def test_app_json_runs_the_procfile_processes_with_a_redis_and_documents_the_variables_it_lists():
    import json
    app = json.loads((PROJECT_ROOT / "app.json").read_text())
    processes = {line.split(":", 1)[0] for line in (PROJECT_ROOT / "Procfile").read_text().splitlines() if line}
    assert set(app["formation"]) == processes == {"web", "worker"}
    assert [a["plan"].split(":")[0] for a in app["addons"]] == ["heroku-redis"]
    assert app["buildpacks"] == [{"url": "heroku/python"}]
    read = (PROJECT_ROOT / "workers" / "settings.py").read_text() + (PROJECT_ROOT / "Procfile").read_text()
    for name, spec in app["env"].items():
        assert f'"{name}"' in read or f"${{{name}" in read, f"{name} is not read by the service"
        assert spec["description"] and isinstance(spec["required"], bool), name
