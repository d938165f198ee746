"""What one Redis round trip costs the client on this machine: the floor under bench/ingest.py's ratio.

    .venv/bin/python bench/roundtrip.py [--trips 3000] [--repeat 3]

One process sends PING and waits for PONG, ``--trips`` times in a row, against a Redis this script
starts, four ways: on a bare socket, sleeping in recv (as a gunicorn sync worker waits), then
spinning on poll(0) until the reply is there; through redis-py's ``Connection`` (as
``workers.stores.intake`` sends the ingest's one write); through redis-py's client
(``Redis.ping()``, pool and command layers included). Prints Markdown: wall time and CPU time
(user + system, from ``os.times``) per round trip, the median of ``--repeat`` runs.

The gap between sleeping and spinning is what it costs to put the client to sleep and wake it
(on a virtual machine, a halted vCPU woken by an interrupt): the part of a round trip the client
pays beyond the syscalls themselves.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import hiredis
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relance.embedded import EmbeddedRedis  # noqa: E402

PING = b"*1\r\n$4\r\nPING\r\n"


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def measure(trip, trips: int) -> tuple[float, float]:
    """Wall and CPU microseconds per call of ``trip``, over ``trips`` calls after a warm-up."""
    for _ in range(100):
        trip()
    cpu, wall = _cpu(), time.perf_counter()
    for _ in range(trips):
        trip()
    return (time.perf_counter() - wall) / trips * 1e6, (_cpu() - cpu) / trips * 1e6


def ways(host: str, port: int) -> dict[str, object]:
    """Each way of making one round trip, as a function of no arguments."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    poller = select.poll()
    poller.register(sock, select.POLLIN)

    def sleeping():
        sock.sendall(PING)
        sock.recv(64)

    def spinning():
        sock.sendall(PING)
        while not poller.poll(0):
            pass
        sock.recv(64)

    client = Redis(host=host, port=port)
    connection = client.connection_pool.get_connection()
    packed = hiredis.pack_command(("PING",))

    def through_connection():
        connection.send_packed_command([packed])
        connection.read_response()

    return {"socket, sleeping in recv": sleeping, "socket, spinning on poll(0)": spinning,
            "redis-py Connection (the intake's way)": through_connection, "redis-py client, ping()": client.ping}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trips", type=int, default=3000, help="round trips per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each way, taking turns")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as redis:
        where = Redis.from_url(redis.url).connection_pool.connection_kwargs
        trips = ways(where["host"], int(where["port"]))
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trips}
        for _ in range(args.repeat):
            for name, trip in trips.items():
                runs[name].append(measure(trip, args.trips))
    print(f"## One Redis round trip, PING ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f})\n")
    print(f"{args.trips} in a row, median of {args.repeat} runs\n")
    print("| way | wall µs | client CPU µs |")
    print("| --- | --- | --- |")
    for name, figures in runs.items():
        wall = statistics.median(w for w, _ in figures)
        cpu = statistics.median(c for _, c in figures)
        print(f"| {name} | {wall:.0f} | {cpu:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
