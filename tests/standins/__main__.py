"""Run the JIRA and SendGrid stand-ins as a process of their own, for benchmarks.

    python -m tests.standins [--latency-ms 100] [--jira-rate 50] [--sendgrid-rate 0] [--issues 10000]

Prints one JSON line (the stand-ins' URLs and credentials) once both serve, then serves until
SIGTERM or SIGINT. GET <url>/_standin/stats on either answers its counts as JSON. Issues
PREFIX-1..N are created in --status, each reported by a customer of its own.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from . import JiraStandIn, SendGridStandIn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.standins")
    parser.add_argument("--latency-ms", type=float, default=0, help="every answer leaves this late")
    parser.add_argument("--jira-rate", type=float, default=0, help="requests/s per endpoint and method (0: none)")
    parser.add_argument("--jira-burst", type=int, default=None)
    parser.add_argument("--sendgrid-rate", type=float, default=0, help="mail sends/s (0: no limit)")
    parser.add_argument("--sendgrid-burst", type=int, default=None)
    parser.add_argument("--issues", type=int, default=0)
    parser.add_argument("--prefix", default="SUP")
    parser.add_argument("--status", default="Waiting for feedback")
    parser.add_argument("--jira-port", type=int, default=0)
    parser.add_argument("--sendgrid-port", type=int, default=0)
    args = parser.parse_args(argv)

    jira = JiraStandIn(latency_ms=args.latency_ms, rate=args.jira_rate or None, burst=args.jira_burst,
                       record=False, port=args.jira_port, expose_stats=True)
    sendgrid = SendGridStandIn(latency_ms=args.latency_ms, rate=args.sendgrid_rate or None,
                               burst=args.sendgrid_burst, record=False, port=args.sendgrid_port, expose_stats=True)
    for i in range(1, args.issues + 1):
        jira.add_user(account_id=f"acc-{i}", email=f"customer{i}@customer.example", display_name=f"Customer {i}",
                      locale="en_US")
        jira.add_issue(f"{args.prefix}-{i}", status=args.status, reporter=f"acc-{i}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with jira, sendgrid:
        print(json.dumps({"jira": jira.url, "jira_email": jira.email, "jira_token": jira.api_token,
                          "sendgrid": sendgrid.url, "sendgrid_key": sendgrid.api_key}), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
