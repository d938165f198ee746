"""Every benchmark of issue #10, one after the other, each printing its figures beside its baseline.

    .venv/bin/python bench/all.py                       # all parts, at the sizes docs/performance.md reports
    .venv/bin/python bench/all.py --quick               # all parts, small sizes (a few minutes)
    .venv/bin/python bench/all.py --parts timers,footprint --latency-ms 200

Each part is a script of its own that can be run alone (its ``--help`` says more), starts its own
Redis, stand-ins and processes, and stops them:

ingest      bench/ingest.py      webhook acceptance against bare Flask (and bare Flask storing the body)
instructions bench/instructions.py instructions per accepted delivery (valgrind), against bare Flask
roundtrip   bench/roundtrip.py   one Redis round trip's cost to the client, sleeping against spinning
processing  bench/processing.py  events/s of one worker with JIRA and SendGrid ``--latency-ms`` away,
                                 by thread count, against RQ's WorkerPool and RQ's no-op baselines
burst       bench/burst.py       a JIRA bulk transition posted by wrk, two workers, rate-limited stand-ins
timers      bench/timers.py      memory per pending timer, a burst due at once, a lone timer behind a
                                 backlog of deliveries, each against the one-job-per-timer scheme
footprint   bench/footprint.py   start-up and memory of web and worker, Redis per ticket, 30 days' model

Needs wrk (Debian: ``apt-get install wrk``) for ingest and burst, valgrind for instructions. Exit status: 1 if a part failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PARTS = ("ingest", "instructions", "roundtrip", "processing", "burst", "timers", "footprint")


def commands(latency_ms: float, quick: bool) -> dict[str, list[str]]:
    """Each part's command line: the sizes of docs/performance.md, or small ones with ``quick``."""
    latency = ["--latency-ms", f"{latency_ms:g}"]
    if quick:
        return {
            "ingest": ["ingest.py", "--seconds", "3", "--repeat", "1", "--rate-seconds", "3"],
            "instructions": ["instructions.py", "--calls", "200"],
            "roundtrip": ["roundtrip.py", "--repeat", "1"],
            "processing": ["processing.py", *latency, "--events", "300", "--threads", "1,32", "--pool", "4",
                           "--repeat", "1"],
            "burst": ["burst.py", *latency, "--tickets", "1000"],
            "timers": ["timers.py", "--timers", "2000", "--pending", "100000", "--backlog", "1000", "--lone",
                       "5", "--runs", "1", "--baseline"],
            "footprint": ["footprint.py", "--parts", "startup,load", "--repeat", "1", "--tickets", "60"],
        }
    return {
        "ingest": ["ingest.py"],
        "instructions": ["instructions.py"],
        "roundtrip": ["roundtrip.py"],
        "processing": ["processing.py", *latency],
        "burst": ["burst.py", *latency, "--tickets", "10000"],
        "timers": ["timers.py", "--timers", "10000", "--pending", "1000000", "--baseline"],
        "footprint": ["footprint.py"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--latency-ms", type=float, default=100, help="added to every JIRA and SendGrid call")
    parser.add_argument("--quick", action="store_true", help="small sizes: a check that every part runs")
    args = parser.parse_args(argv)
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose among {', '.join(PARTS)}")
    lines = commands(args.latency_ms, args.quick)
    outcomes = []
    for part in wanted:
        command = [sys.executable, str(BENCH / lines[part][0]), *lines[part][1:]]
        print(f"\n# {part}: {' '.join(['bench/' + lines[part][0], *lines[part][1:]])}\n", flush=True)
        started = time.monotonic()
        code = subprocess.call(command, cwd=BENCH.parent)
        outcomes.append((part, code, time.monotonic() - started))
    print("\n# Summary\n\n| part | exit | minutes |\n| --- | --- | --- |")
    for part, code, seconds in outcomes:
        print(f"| {part} | {code} | {seconds / 60:.1f} |")
    return 1 if any(code for _, code, _ in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
