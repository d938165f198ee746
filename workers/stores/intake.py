"""A webhook delivery accepted in one Redis round trip: stored, deduped, queued as an RQ job, counted, logged.

One write to Redis carries a ``SET NX`` of the body and one Lua script that does
what ``enqueue_call`` (RQ's unique enqueue), the verdict's counter and the
dashboard's delivery log did in six or so round trips; one read gets both
answers. Redis runs a script whole, and refuses both commands when it is full:
with Redis down or full, nothing is written (the route answers 503 and JIRA
retries); with the answer lost on its way back, everything is (the retry is
then a duplicate); with the connection lost between the two commands, the body
is stored without its job, the answer is 503, and the retry queues it. The job
it writes is the one RQ's ``Queue.enqueue_call(..., unique=True)`` would write
for relance's job options: its hash is made once per kind of job by RQ's own
``Job.to_dict()`` and only the call (``data``, ``description``) and the
timestamps change per delivery, so RQ's workers run, retry and report it as any
other job, and tests/test_intake.py compares it field by field with RQ's own
enqueue (an RQ upgrade that writes other fields fails that test).

Dedupe rules (those of the JIRA route since #2), decided by the script from the
job and the ``:done`` mark, not from the body's presence:
- a new delivery id: the body is stored and the job queued ("queued");
- a known id whose delivery was processed (its ``:done`` mark): "duplicate", nothing queued;
- a known id whose job still exists: "duplicate" (the body stored again if it had expired);
- a known id whose job is missing (lost before it was written, or expired): queued again
  ("queued"); the job id is unique and a processed delivery is a no-op, so this is safe.
"""

from __future__ import annotations

import os
import threading
import zlib
from datetime import datetime, timezone

import hiredis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError
from rq import Queue, Retry
from rq.job import JobStatus
from rq.utils import get_call_string, utcformat

from .. import defaults
from .deliveries import DeliveryStore
from .metrics import KEY as METRICS_KEY, SEP
from .queue import job_options
from .views import DELIVERY_LOG_KEY, DELIVERY_LOG_MAX, delivery_log_fields

QUEUED, DUPLICATE = "queued", "duplicate"
CODES = {QUEUED: 202, DUPLICATE: 200}        # the HTTP answer each verdict is logged with

# The body is stored by a SET NX sent with the script, in the same write: passed to a script, an
# 11 KB argument cost Redis 30 µs more a delivery (a Lua string made of it, then a Redis string of that).
# KEYS: 1 the body's done mark, 2 job hash, 3 queue list, 4 RQ's set of queues, 5 metrics hash, 6 delivery log
# ARGV: 1 job id, 2 TTL of the metrics and the log, 3 the counter's field but the verdict ("": not counted),
#       4 the job's data, 5 its description, 6 its created_at and enqueued_at, 7 n = number of log values,
#       8..7+n the log's field/value pairs.
# JOB_FIELDS, JOB_TTL, LOG_MAX: the job hash's fields that are the same for every job of a template
# (written into the script's source, one script per template, so they are not sent with each call),
# the job's TTL (-1: none), the delivery log's cap.
_ACCEPT = """
local verdict = "duplicate"
if redis.call("EXISTS", KEYS[1]) == 0 and redis.call("EXISTS", KEYS[2]) == 0 then
  redis.call("HSET", KEYS[2], "data", ARGV[4], "description", ARGV[5], "created_at", ARGV[6],
             "enqueued_at", ARGV[6], JOB_FIELDS)
  if JOB_TTL > 0 then redis.call("EXPIRE", KEYS[2], JOB_TTL) end
  redis.call("RPUSH", KEYS[3], ARGV[1])
  redis.call("SADD", KEYS[4], KEYS[3])
  verdict = "queued"
end
if ARGV[3] ~= "" then
  redis.call("HINCRBY", KEYS[5], ARGV[3] .. verdict, 1)
  redis.call("EXPIRE", KEYS[5], ARGV[2])
end
local code = "200"
if verdict == "queued" then code = "202" end
redis.call("XADD", KEYS[6], "MAXLEN", "~", LOG_MAX, "*", "code", code, "verdict", verdict,
           unpack(ARGV, 8, 7 + tonumber(ARGV[7])))
redis.call("EXPIRE", KEYS[6], ARGV[2])
return verdict
"""


def _lua_string(value) -> str:
    """``value`` as redis-py sends it (str, bytes, int or float), as a Lua string literal: printable
    ASCII as is, but for quote and backslash, every other byte as a decimal escape."""
    raw = value if isinstance(value, bytes) else str.encode(value) if isinstance(value, str) else repr(value).encode()
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in raw) + '"'


def _compress(data: bytes) -> bytes:
    """``data`` zlib-compressed, as RQ's ``Job.to_dict`` does, for a call of a few dozen bytes: a
    512-byte window and hash (``zlib.compress`` clears a 64 KB hash table first, most of its
    cost here). ``zlib.decompress``, as RQ's ``Job.restore`` calls it, reads either."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 9, 1)
    return compressor.compress(data) + compressor.flush()


class JobTemplate:
    """The hash RQ writes for ``queue.enqueue_call(func, args, **job_options(timeout, ...), unique=True)``.

    Made once with RQ's ``create_job`` and ``Job.to_dict()``. The fields that differ from job to
    job are PER_JOB (the call and the timestamps): ``call(args)`` gives them; the others are
    written into this template's accept script.
    """

    PER_JOB = ("data", "description", "created_at", "enqueued_at")

    def __init__(self, queue: Queue, func: str, timeout: float, failure_ttl: int = defaults.RETENTION_SECONDS,
                 retry: Retry | None = None):
        job = queue.create_job(func, args=(), job_id="template", status=JobStatus.QUEUED,
                               **job_options(timeout, failure_ttl, retry))
        job.enqueued_at = job.created_at            # what Queue.enqueue_job adds before saving
        self.func = func
        self.serializer = queue.serializer
        fields = {k: v for k, v in job.to_dict().items() if v is not None}
        missing = [k for k in self.PER_JOB if k not in fields]
        if missing:     # pragma: no cover - only an RQ upgrade gets here
            raise RuntimeError(f"RQ's job hash has no {', '.join(missing)}: check workers/stores/intake.py")
        constant = [x for k, v in fields.items() if k not in self.PER_JOB for x in (k, v)]
        # JOB_FIELDS last, so that no value written into the source is itself replaced
        self.script = (_ACCEPT.replace("JOB_TTL", str(int(job.ttl or -1))).replace("LOG_MAX", str(DELIVERY_LOG_MAX))
                       .replace("JOB_FIELDS", ", ".join(map(_lua_string, constant))))

    def call(self, args: tuple, at: datetime | None = None) -> tuple[bytes, str, str]:
        """The job's data, description, and created_at (= enqueued_at) for ``func(*args)`` queued ``at`` (now)."""
        return (_compress(self.serializer.dumps((self.func, None, args, {}))),          # as Job.to_dict
                get_call_string(self.func, args, {}, max_length=75),                    # as Job.create
                utcformat(at or datetime.now(timezone.utc)))


class Intake:
    """Accepts deliveries for any webhook route: body, dedupe, RQ job, counter and log in one round trip.

    Its script runs on a connection of its own per process and thread: redis-py's Connection (its
    connect, authentication, parser and errors), without the client's pool and command layers, which
    cost as much again as the call itself (about 35 µs of 70 on the 2-core bench machine).
    """

    def __init__(self, deliveries: DeliveryStore, queue: Queue, retention: int = defaults.RETENTION_SECONDS):
        """``retention``: TTL of the counters and the delivery log."""
        self.redis = deliveries.redis
        self.deliveries = deliveries
        self.queue = queue
        self.retention = int(retention)
        self._templates: dict[tuple, tuple] = {}
        self._local = threading.local()

    def template(self, func: str, timeout: float, retry: Retry | None = None):
        """The job template of ``func`` with these options and its registered script, made on first use."""
        key = (func, int(timeout), (retry.max, tuple(retry.intervals)) if retry else None)
        if key not in self._templates:
            template = JobTemplate(self.queue, func, timeout, retry=retry)
            self._templates[key] = (template, self.redis.register_script(template.script))
        return self._templates[key]

    def accept(self, delivery_id: str, body: bytes, func: str, job_id: str, args: tuple = (), *,
               timeout: float = defaults.JOB_TIMEOUT_SECONDS, retry: Retry | None = None,
               counter: tuple[str, ...] | None = ("deliveries",), log: dict | None = None) -> str:
        """Accept one delivery: QUEUED or DUPLICATE (the module's dedupe rules), in one atomic round trip.

        Stores ``body`` under ``delivery_id`` (kept until processed, DeliveryStore's TTL); unless the
        delivery is a duplicate, queues the RQ job ``func(*args)`` under ``job_id`` with relance's job
        options (``retry``: RQ's schedule, default JOB_RETRIES at JOB_RETRY_INTERVALS_SECONDS); counts
        the verdict under ``counter`` (a COUNTERS name and its labels but the verdict, as Metrics.count
        takes them; None: not counted); adds the verdict to the delivery log with the answer's code
        (CODES) and the ``log`` fields (source, ticket, event, delivery...). Raises RedisError, having
        written nothing.
        """
        template, script = self.template(func, timeout, retry)
        entry = [x for pair in delivery_log_fields(**(log or {})).items() for x in pair]
        did_key = self.deliveries.key(delivery_id)
        keys = (did_key + ":done", self.queue.job_class.key_for(job_id), self.queue.key, Queue.redis_queues_keys,
                METRICS_KEY, DELIVERY_LOG_KEY)
        counted = SEP.join(counter) + SEP if counter else ""
        store = ("SET", did_key, body, "NX", "EX", self.deliveries.keep)
        accept = ("EVALSHA", script.sha, len(keys), *keys, job_id, self.retention, counted, *template.call(args),
                  len(entry), *entry)
        verdict = self._round_trip(script, store, accept)
        return verdict.decode() if isinstance(verdict, bytes) else verdict

    def _round_trip(self, script, store: tuple, accept: tuple):
        """``store`` (the body's SET) and ``accept`` (the script) written together on this process's and
        thread's connection; the script's reply. The script is loaded first if Redis does not know it.
        Connected, checked and retried as the client does: a connection the server closed meanwhile
        (a restart) is opened anew, as the client's pool does.

        Either command refused (Redis full, read-only) raises: a write refused for lack of memory
        refuses both, so nothing is written; a body stored without its job (the connection lost
        between the two) is answered 503, and the sender's retry queues it (SET NX, the job absent)."""
        connection = self._connection()
        connection.connect()                    # as ConnectionPool.get_connection: connect, then drop and
        try:                                    # reopen a connection the server closed, or with stray data
            if connection.can_read():
                raise ConnectionError("connection has data")
        except (ConnectionError, TimeoutError, OSError):
            connection.disconnect()
            connection.connect()

        def replies(n: int) -> list:
            """The next ``n`` replies, errors included: each is read, so the connection stays in step."""
            read = []
            for _ in range(n):
                try:
                    read.append(connection.read_response())
                except ResponseError as e:
                    read.append(e)
            return read

        def call():
            connection.send_packed_command([hiredis.pack_command(store) + hiredis.pack_command(accept)])
            stored, verdict = replies(2)
            if isinstance(verdict, NoScriptError):      # a new or restarted Redis: load it, run it again
                load = ("SCRIPT", "LOAD", script.script)
                connection.send_packed_command([hiredis.pack_command(load) + hiredis.pack_command(accept)])
                _, verdict = replies(2)
            for reply in (stored, verdict):
                if isinstance(reply, ResponseError):
                    raise reply
            return verdict

        return connection.retry.call_with_retry(call, lambda error: connection.disconnect())

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.pid != os.getpid():        # none yet in this thread, or forked
            pool = self.redis.connection_pool
            connection = self._local.connection = pool.connection_class(**pool.connection_kwargs)
        return connection
