"""Metrics kept in Redis, so every web process and dyno answers ``/metrics`` the same.

Counters and histograms are fields of one Redis hash (``relance:metrics``),
incremented with HINCRBY/HINCRBYFLOAT (one round trip, fire-and-forget on the
hot paths); gauges (pending timers, queue depth) are read when scraped. The
exposition format is prometheus_client's. The hash expires after the retention
without activity, like every key relance writes.
"""

from __future__ import annotations

import logging
from bisect import bisect_left

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from redis import Redis
from redis.exceptions import RedisError

from .. import defaults
from .connection import text

log = logging.getLogger("relance.metrics")

KEY = "relance:metrics"
SEP = "\x1f"                  # between a metric's name and its label values, in the hash's field names

COUNTERS = {
    "deliveries": ("relance_deliveries_total", "Webhook deliveries by the web edge's verdict.", ("verdict",)),
    "mail_webhooks": ("relance_mail_webhooks_total", "SendGrid posts (inbound: email replies, events: delivery "
                      "events) by the web edge's verdict.", ("source", "verdict")),
    "effects": ("relance_effects_total", "Effects (emails, JIRA actions, notifications) by outcome.",
                ("action", "outcome")),
    "mail_events": ("relance_mail_events_total", "SendGrid delivery events about relance's emails, each counted "
                    "once (delivered, deferred, bounced, blocked, dropped, spamreport).", ("event",)),
}
HISTOGRAMS = {
    "lateness": ("relance_timer_lateness_seconds", "How late timers fired after their due time.", (),
                 (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)),
    "remote": ("relance_remote_seconds", "Latency of calls to JIRA and SendGrid.", ("service",),
               (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)),
}


class Metrics:
    """Writes counters and observations; ``exposition()`` renders them with the gauges."""

    def __init__(self, redis: Redis, ttl: int = defaults.RETENTION_SECONDS):
        self.redis = redis
        self.ttl = int(ttl)

    def count(self, name: str, *labels: str, by: int = 1, pipe=None) -> None:
        """Add ``by`` to a counter of COUNTERS. Never raises: a metric is not worth a failed request."""
        self._write(lambda p: p.hincrby(KEY, SEP.join((name, *labels)), by), pipe)

    def observe(self, name: str, value: float, *labels: str, pipe=None) -> None:
        """Record one observation in a histogram of HISTOGRAMS (buckets, sum and count)."""
        buckets = HISTOGRAMS[name][3]
        bucket = bisect_left(buckets, value)
        le = str(buckets[bucket]) if bucket < len(buckets) else "+Inf"

        def write(p):
            p.hincrby(KEY, SEP.join((name, *labels, "le", le)), 1)
            p.hincrbyfloat(KEY, SEP.join((name, *labels, "sum")), value)
        self._write(write, pipe)

    def _write(self, write, pipe) -> None:
        try:
            p = pipe or self.redis.pipeline(transaction=False)
            write(p)
            p.expire(KEY, self.ttl)
            if pipe is None:
                p.execute()
        except RedisError as e:
            log.debug("metric not recorded: %s", e)

    def exposition(self, queue_name: str) -> bytes:
        """The Prometheus text exposition of every metric, as of now."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self.redis, queue_name))
        return generate_latest(registry)


class _Collector:
    def __init__(self, redis: Redis, queue_name: str):
        self.redis, self.queue_name = redis, queue_name

    def collect(self):
        from .timers import PENDING_KEY
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(KEY)
        pipe.zcard(PENDING_KEY)
        pipe.llen(f"rq:queue:{self.queue_name}")
        raw, pending, depth = pipe.execute()
        fields = {tuple(text(k).split(SEP)): text(v) for k, v in raw.items()}
        for short, (name, doc, labels) in COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, value in sorted(fields.items()):
                if key[0] == short and len(key) == len(labels) + 1:
                    family.add_metric(list(key[1:]), float(value))
            yield family
        for short, (name, doc, labels, buckets) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, doc, labels=labels)
            series = {key[1:1 + len(labels)] for key in fields if key[0] == short}
            for values in sorted(series):
                per_le = {k[-1]: int(v) for k, v in fields.items()
                          if k[0] == short and k[1:1 + len(labels)] == values and k[-2:-1] == ("le",)}
                running, rows = 0, []
                for le in [*map(str, buckets), "+Inf"]:
                    running += per_le.get(le, 0)
                    rows.append((le, running))
                total = float(fields.get((short, *values, "sum"), 0))
                family.add_metric(list(values), rows, total)
            yield family
        gauge = GaugeMetricFamily("relance_timers_pending", "Timers armed and not yet fired.")
        gauge.add_metric([], pending)
        yield gauge
        gauge = GaugeMetricFamily("relance_queue_depth", "Jobs waiting in the RQ queue.")
        gauge.add_metric([], depth)
        yield gauge
