"""Configuration read from the environment: what is refused, and what never shows."""

import traceback

import pytest

from tests.standins import JiraStandIn
from webhooks import create_app
from workers.context import Context
from workers.exceptions import ConfigError, JiraError
from workers.settings import Settings

# Module-level, so no test frame holds them as locals: a traceback with locals must not show them.
SECRETS = {"JIRA_API_TOKEN": "api-token-1f2e3d", "JIRA_WEBHOOK_SECRET": "hook-secret-4c5b6a",
           "SENDGRID_API_KEY": "SG.key-7d8e9f", "OPERATOR_PASSWORD": "operator-pw-0a1b2c"}
PAT = "dc-pat-5e6f7a"


def leaked(text: str) -> list[str]:
    return [value for value in [*SECRETS.values(), PAT, "hunter2"] if value in text]


def with_locals(error: BaseException) -> str:
    return "".join(traceback.TracebackException.from_exception(error, capture_locals=True).format())


@pytest.fixture
def secret_env(monkeypatch, redis_server, rules_file):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JIRA_BASE_URL", "https://acme.atlassian.net")
    monkeypatch.setenv("JIRA_USER_EMAIL", "bot@acme.example")
    monkeypatch.setenv("MAIL_FROM", "Acme Support <support@acme.example>")
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("RULES_FILE", str(rules_file))


def test_settings_edge_context_and_jira_client_reprs_show_no_secret(secret_env, redis):
    settings = Settings.from_env()
    edge = create_app(settings).extensions["relance"]
    context = Context.build(settings, redis)
    data_center = Context.build(settings.replace(jira_pat=PAT), redis)
    for shown in (repr(settings), repr(edge), repr(context), repr(context.effects.jira),
                  repr(data_center), repr(data_center.effects.jira)):
        assert leaked(shown) == []
    assert "SecretStr('**********')" in repr(settings)
    assert settings.reveal("jira_api_token") == SECRETS["JIRA_API_TOKEN"]    # the client still gets it


def test_a_redis_password_is_hidden_from_the_settings_repr():
    shown = repr(Settings(redis_url="redis://h:hunter2@redis.example:6379/0"))
    assert "hunter2" not in shown and "redis://h:***@redis.example:6379/0" in shown


def test_a_configuration_error_traceback_with_locals_shows_no_secret(secret_env, monkeypatch):
    monkeypatch.setenv("RELANCE_JOB_TIMEOUT", "soon")
    with pytest.raises(ConfigError) as raised:
        create_app()
    assert "RELANCE_JOB_TIMEOUT" in str(raised.value)
    assert leaked(with_locals(raised.value)) == []


def test_a_failing_jira_call_traceback_with_locals_shows_no_secret(settings, redis):
    with JiraStandIn(pat=PAT) as jira:
        context = Context.build(settings.replace(jira_base_url=jira.url, jira_pat=PAT,
                                                 jira_webhook_secret=SECRETS["JIRA_WEBHOOK_SECRET"]), redis)
        with pytest.raises(JiraError) as raised:
            context.effects.jira.issue("NOPE-404")
    assert raised.value.status == 404      # authenticated with the PAT, then refused
    assert leaked(with_locals(raised.value)) == []


def test_secrets_given_as_plain_strings_are_kept_as_secrets():
    settings = Settings(operator_password="operator-pw-0a1b2c", jira_pat="")
    assert settings.reveal("operator_password") == "operator-pw-0a1b2c"
    assert settings.jira_pat is None and settings.reveal("jira_pat") is None
    assert "operator-pw-0a1b2c" not in repr(settings)


JIRA_CREDENTIALS = {"JIRA_USER_EMAIL": "bot@acme.example", "JIRA_API_TOKEN": "api-token"}


@pytest.mark.parametrize("url", ["https://acme.atlassian.net", "https://jira.acme.com:8443/jira/",
                                 "http://127.0.0.1:8080", "http://127.8.9.10", "http://localhost:2990/jira",
                                 "http://[::1]:8080/"])
def test_https_or_a_loopback_http_jira_is_accepted(url):
    assert Settings.from_env({"JIRA_BASE_URL": url, **JIRA_CREDENTIALS}).jira_base_url == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://jira.acme.com", "http://10.0.0.5:8080", "http://[::ffff:10.0.0.5]",
                                 "http://localhost.acme.com", "http://128.0.0.1"])
def test_plain_http_to_another_host_is_refused(url):
    with pytest.raises(ConfigError, match="JIRA_BASE_URL must start with https://") as refused:
        Settings.from_env({"JIRA_BASE_URL": url, **JIRA_CREDENTIALS})
    assert "in clear" in str(refused.value) and url in str(refused.value)


@pytest.mark.parametrize("url,problem", [("jira.acme.com", "must start with http:// or https://"),
                                         ("ftp://jira.acme.com", "must start with http:// or https://"),
                                         ("https://", "no host name"), ("https://[::1", "is not a URL")])
def test_a_jira_base_url_that_is_no_url_is_refused(url, problem):
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env({"JIRA_BASE_URL": url, **JIRA_CREDENTIALS})


def test_retention_defaults_to_90_days():
    assert Settings.from_env({}).retention == 90 * 86400 == Settings().retention


@pytest.mark.parametrize("raw,seconds", [("90d", 90 * 86400), ("2w", 14 * 86400), ("1d12h", 129600),
                                         (" 36h ", 36 * 3600)])
def test_retention_reads_a_duration(raw, seconds):
    assert Settings.from_env({"RELANCE_RETENTION": raw}).retention == seconds


@pytest.mark.parametrize("raw", ["ninety days", "0d", "-1d", "90", "90x"])
def test_an_invalid_retention_is_refused_naming_the_variable(raw):
    with pytest.raises(ConfigError, match=r"^RELANCE_RETENTION: invalid duration"):
        Settings.from_env({"RELANCE_RETENTION": raw})


def test_the_reconcile_interval_is_a_duration_with_a_default_of_an_hour():
    assert Settings.from_env({}).reconcile_interval == 3600
    assert Settings.from_env({"RELANCE_RECONCILE_INTERVAL": "30m"}).reconcile_interval == 1800
    with pytest.raises(ConfigError, match="RELANCE_RECONCILE_INTERVAL"):
        Settings.from_env({"RELANCE_RECONCILE_INTERVAL": "often"})


def test_worker_threads_and_remote_rates_are_read_and_checked():
    defaults = Settings.from_env({})
    assert (defaults.worker_threads, defaults.jira_rate, defaults.sendgrid_rate) == (32, 0, 0)
    chosen = Settings.from_env({"RELANCE_WORKER_THREADS": "32", "RELANCE_JIRA_RATE": "40",
                                "RELANCE_SENDGRID_RATE": "2.5"})
    assert (chosen.worker_threads, chosen.jira_rate, chosen.sendgrid_rate) == (32, 40.0, 2.5)


@pytest.mark.parametrize("name,raw", [("RELANCE_WORKER_THREADS", "0"), ("RELANCE_WORKER_THREADS", "many"),
                                      ("RELANCE_WORKER_THREADS", "-4"), ("RELANCE_JIRA_RATE", "-1"),
                                      ("RELANCE_SENDGRID_RATE", "fast"), ("RELANCE_JIRA_RATE", "nan")])
def test_invalid_worker_threads_or_rates_are_refused_naming_the_variable(name, raw):
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        Settings.from_env({name: raw})
