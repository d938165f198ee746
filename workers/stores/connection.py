"""Redis connections. RQ needs bytes (decode_responses=False); our own keys decode by hand."""

from __future__ import annotations

from redis import Redis

from .. import defaults


def redis_from_url(url: str, socket_timeout: float | None = None) -> Redis:
    """A client for ``url`` that fails fast when Redis is unreachable."""
    return Redis.from_url(
        url,
        socket_connect_timeout=defaults.REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )


# Delete a lock-like key only if it still holds this token (a claim or lock that expired and was
# taken by someone else is left alone): redis-py's Lock releases the same way.
RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def run_script(script, keys: list, args: list, pipe=None):
    """Run a registered Lua script: on its own, by EVALSHA (loaded on first use); on ``pipe``, as EVAL of
    its text, since redis-py asks SCRIPT EXISTS before each pipeline holding a registered script (one
    round trip more). Redis caches the compiled script either way."""
    if pipe is None:
        return script(keys=keys, args=args)
    return pipe.eval(script.script, len(keys), *keys, *args)
