"""Everything a job needs, built once per worker process from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from redis import Redis
from rq import Queue

from . import defaults
from .actions import Effects
from .stores.audit import Audit
from .stores.budget import RemoteBudget
from .stores.connection import redis_from_url
from .stores.deliveries import DeliveryStore
from .rendering.emails import Renderer
from .failures import FailureStore
from .clients.jira import make_jira
from .stores.ledger import EffectLedger
from .clients.mail import make_mailer
from .stores.metrics import Metrics
from .clients.notify import Notifier
from .stores.queue import make_queue
from .core.replies import ReplyAddresses
from .exceptions import ConfigError
from .core.rules import RuleSet, load_rules
from .settings import Settings
from .stores.tickets import TicketStore
from .stores.timers import TimerStore


@dataclass
class Context:
    settings: Settings
    redis: Redis
    rules: RuleSet
    queue: Queue
    deliveries: DeliveryStore
    tickets: TicketStore
    timers: TimerStore
    audit: Audit
    effects: Effects
    failures: FailureStore

    @classmethod
    def build(cls, settings: Settings, redis: Redis | None = None) -> "Context":
        if not settings.redis_url and redis is None:
            raise RuntimeError("REDIS_URL is not set (python -m relance up starts a private Redis and sets it)")
        redis = redis or redis_from_url(settings.redis_url)
        rules = load_rules(settings.rules_file, settings.templates_dir)
        # A ticket's memory and timeline outlive its longest timer by the retention.
        ticket_ttl = settings.retention + rules.longest_delay()
        audit = Audit(redis, ttl=ticket_ttl)
        metrics = Metrics(redis, settings.retention)
        failures = FailureStore(redis, settings.retention)
        ledger = EffectLedger(redis, ttl=settings.retention,
                              claim_seconds=settings.job_timeout + defaults.HEARTBEAT_GRACE_SECONDS)
        effects = Effects(rules=rules, jira=make_jira(settings), mailer=make_mailer(settings),
                          renderer=Renderer(settings.templates_dir, rules.locale), ledger=ledger,
                          audit=audit, jira_base_url=settings.jira_base_url, notifier=Notifier(os.environ),
                          metrics=metrics, failures=failures, replies=reply_addresses(settings))
        effects.jira.timing = lambda seconds: metrics.observe("remote", seconds, "jira")
        effects.mailer.timing = lambda seconds: metrics.observe("remote", seconds, "sendgrid")
        # Every thread of every worker shares one budget per remote (rate, and pauses a 429 asks for).
        if settings.jira_configured:
            effects.jira.budget = RemoteBudget(redis, "jira", settings.jira_rate)
        if settings.sendgrid_configured:
            effects.mailer.budget = RemoteBudget(redis, "sendgrid", settings.sendgrid_rate)
        return cls(settings, redis, rules, make_queue(redis, settings.queue_name),
                   DeliveryStore(redis, keep=settings.retention), TicketStore(redis, ticket_ttl),
                   TimerStore(redis, lease=settings.job_timeout + defaults.HEARTBEAT_GRACE_SECONDS), audit, effects,
                   failures)


def reply_addresses(settings: Settings) -> ReplyAddresses | None:
    """What signs the Reply-To of customer emails, when REPLY_DOMAIN is set (from_env then requires the key)."""
    if not settings.replies_enabled:
        return None
    secret = settings.reveal("secret_key")
    if not secret:
        raise ConfigError("REPLY_DOMAIN is set but RELANCE_SECRET_KEY is not: reply addresses cannot be signed")
    return ReplyAddresses(secret, settings.reply_domain)


_context: Context | None = None


def current() -> Context:
    """The process's context, built from the environment on first use (jobs take ids and re-read state)."""
    global _context
    if _context is None:
        _context = Context.build(Settings.from_env())
    return _context


def use(context: Context | None) -> None:
    """Make ``context`` the process's context (a worker embedding relance, or a test)."""
    global _context
    _context = context
