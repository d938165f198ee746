"""The web edge: receive JIRA webhooks, verify, dedupe, enqueue. Never decides, never acts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, jsonify, request
from redis import Redis
from rq import Queue
from werkzeug.exceptions import HTTPException

from workers import defaults
from workers.stores.connection import redis_from_url
from workers import logs
from workers.stores.deliveries import DeliveryStore
from workers.stores.intake import Intake
from workers.stores.metrics import Metrics
from workers.exceptions import ConfigError
from workers.stores.queue import make_queue
from workers.core.rules import RuleSet, load_rules
from workers.settings import Settings

from .signature import sendgrid_keys

log = logging.getLogger("relance.webhooks")


@dataclass
class Edge:
    """What request handlers share: settings, Redis, the queue, the delivery store and its intake."""

    settings: Settings
    redis: Redis
    queue: Queue
    deliveries: DeliveryStore
    rules: RuleSet | None = None
    metrics: Metrics | None = None
    retry_after: int = defaults.RETRY_AFTER_SECONDS_ON_503
    intake: Intake | None = None


def require_authentication(settings: Settings) -> None:
    """Raise ConfigError if webhooks would drive a real JIRA while anyone may post them.

    Passes when a secret or a URL token is set, when JIRA is a dry run, or when
    ALLOW_UNAUTHENTICATED_WEBHOOKS says something in front of relance authenticates them.
    """
    if (settings.jira_configured and not settings.allow_unauthenticated_webhooks
            and not (settings.jira_webhook_secret or settings.jira_webhook_token)):
        raise ConfigError(
            "JIRA_BASE_URL is set but nothing authenticates webhooks, so anyone could drive JIRA through "
            "relance: set JIRA_WEBHOOK_SECRET to the secret of the JIRA webhook (JIRA Cloud signs with it), "
            "or, where JIRA cannot sign (Data Center), set JIRA_WEBHOOK_TOKEN to a long random value and "
            "end the webhook's URL with ?token=<that value>; if a proxy of yours authenticates deliveries, "
            "set ALLOW_UNAUTHENTICATED_WEBHOOKS=1")


def check_sendgrid_key(settings: Settings) -> None:
    """Raise ConfigError if SENDGRID_WEBHOOK_PUBLIC_KEY is set but is not what SendGrid shows."""
    if settings.sendgrid_webhook_public_key:
        try:
            sendgrid_keys(settings.sendgrid_webhook_public_key)
        except ValueError as e:
            raise ConfigError(f"SENDGRID_WEBHOOK_PUBLIC_KEY: {e}. Paste the verification key SendGrid shows for "
                              "the signed Event Webhook or the Inbound Parse security policy (base64, "
                              "starting MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE); separate several with commas") from None


def config_warnings(settings: Settings) -> list[str]:
    """What the web starts with but an operator should know."""
    if settings.replies_enabled and not settings.sendgrid_webhook_public_key:
        return ["REPLY_DOMAIN is set but SENDGRID_WEBHOOK_PUBLIC_KEY is not: Inbound Parse posts are not "
                "signature-checked (their signed reply address still authenticates each reply); attach a "
                "signing security policy to the Parse setting and set its key to check them"]
    return []


def check_config(settings: Settings) -> RuleSet:
    """Raise what the web refuses to start on, building nothing: no REDIS_URL (RuntimeError),
    unauthenticated webhooks or a bad SendGrid key (ConfigError), an invalid rules file (RulesError).
    Return the rules."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set (python -m relance up starts a private Redis and sets it)")
    require_authentication(settings)
    check_sendgrid_key(settings)
    # A bad rules file stops the web too, so a broken deploy fails at once, not at the first event.
    return load_rules(settings.rules_file, settings.templates_dir)


def create_app(config: Settings | dict | None = None) -> Flask:
    """The Flask app. ``config``: Settings, or a dict of environment variables; default: the environment.

    Raises what ``check_config`` raises.
    """
    if isinstance(config, dict) or config is None:
        settings = Settings.from_env(config)
    else:
        settings = config
    rules = check_config(settings)
    app = Flask(__name__, template_folder=str(settings.templates_dir))
    app.config["MAX_CONTENT_LENGTH"] = defaults.MAX_BODY_BYTES
    redis = redis_from_url(settings.redis_url, socket_timeout=defaults.REDIS_SOCKET_TIMEOUT_SECONDS)
    queue, deliveries = make_queue(redis, settings.queue_name), DeliveryStore(redis, keep=settings.retention)
    app.extensions["relance"] = Edge(settings, redis, queue, deliveries, rules, Metrics(redis, settings.retention),
                                     intake=Intake(deliveries, queue, settings.retention))

    from . import health, jira, metrics, operator, sendgrid, verdicts
    app.register_blueprint(jira.bp)
    app.register_blueprint(sendgrid.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(operator.bp)

    webhook_sources = {jira.PATH: "jira", sendgrid.INBOUND_PATH: "inbound", sendgrid.EVENTS_PATH: "events"}

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        source = webhook_sources.get(request.path)
        if source:
            # Refused before the handler answered (a body over the limit, a method other than POST): still a
            # delivery, counted and logged.
            return verdicts.answer(source, e.code, error=e.name.lower(), reason=e.description)
        response = jsonify(error=e.name.lower(), reason=e.description)
        response.status_code = e.code
        return response

    app.wsgi_app = FastRoutes(app, {jira.PATH: jira.receive})
    logs.configure(settings.log_format)
    for warning in config_warnings(settings):
        log.warning(warning)
    return app


class FastRoutes:
    """WSGI middleware: POSTs to the webhook ``routes`` go straight to their handler, before Flask's
    dispatch; every other request goes to Flask.

    A handler takes the app and the request (Flask's Request class, MAX_CONTENT_LENGTH applied) and
    returns a response, needing no app or request context. Skipped: the contexts, URL matching,
    signals and hooks, about 70 µs a request here (as much as a bare Flask endpoint spends in
    Flask), for routes that use none of them. Flask still lists the routes, and answers their
    other methods (405).
    """

    def __init__(self, app: Flask, routes: dict):
        self.app, self.routes, self.flask = app, routes, app.wsgi_app

    def __call__(self, environ, start_response):
        handler = self.routes.get(environ.get("PATH_INFO")) if environ.get("REQUEST_METHOD") == "POST" else None
        if handler is None:
            return self.flask(environ, start_response)
        request = self.app.request_class(environ)
        request.max_content_length = self.app.config["MAX_CONTENT_LENGTH"]
        return handler(self.app, request)(environ, start_response)
