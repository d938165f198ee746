"""Instructions per accepted delivery, counted by valgrind: a figure the machine's load does not move.

    .venv/bin/python bench/instructions.py [--calls 500]

For relance's app and the bare Flask endpoint of bench/baseline_app.py, one process calls the
app's WSGI entry ``--calls`` times with a real 11 KB JIRA body and a fresh delivery id each
(every call stored and queued, as in bench/ingest.py), against a Redis this script starts.
Each is run twice under ``valgrind --tool=callgrind``, with 100 calls and with 100 + ``--calls``;
the difference divided by ``--calls`` is the instructions of one call, start-up and imports left
out. User space only: the kernel's part (the Redis round trip's syscalls) is not counted, and
neither is gunicorn's HTTP handling, the same for both apps. Needs Debian's valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relance.embedded import EmbeddedRedis  # noqa: E402

BODY = ROOT / "docs/examples/waiting-for-feedback.json"
APPS = {"bare Flask": "bare", "relance": "relance"}
WARM_UP = 100

CALLER = r'''
import io, sys, time
which, n = sys.argv[1], int(sys.argv[2])
if which == "relance":
    from webhooks import create_app
    app = create_app()
else:
    from bench.baseline_app import app
body = open(sys.argv[3], "rb").read()
stamp = time.time_ns()
for i in range(n):
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/webhooks/jira", "SERVER_NAME": "bench", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "QUERY_STRING": "", "wsgi.errors": sys.stderr,
               "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
               "HTTP_X_ATLASSIAN_WEBHOOK_IDENTIFIER": f"instructions-{stamp}-{i}"}
    status = []
    b"".join(app.wsgi_app(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("202"), status
'''


def instructions(which: str, calls: int, env: dict, tmp: Path) -> int:
    """Instructions valgrind counted for a process making ``calls`` calls of ``which``."""
    script = tmp / "caller.py"
    script.write_text(CALLER)
    out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp / 'callgrind.out'}",
                          sys.executable, str(script), which, str(calls), str(BODY)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{which}: {out.stderr[-2000:]}")
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="calls counted, after 100 (default 500)")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed: apt-get install -y valgrind")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as redis:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JIRA_", "SENDGRID_", "REPLY_"))}
        env.update(REDIS_URL=redis.url, OUTBOX_DIR=str(Path(tmp) / "outbox"), PYTHONPATH=str(ROOT))
        per_call = {}
        for name, which in APPS.items():
            few = instructions(which, WARM_UP, env, Path(tmp))
            more = instructions(which, WARM_UP + args.calls, env, Path(tmp))
            per_call[name] = (more - few) / args.calls
    print(f"## Instructions per accepted delivery, the WSGI call alone ({args.calls} calls, callgrind)\n")
    print("| app | instructions per call | against bare Flask |\n| --- | --- | --- |")
    for name, n in per_call.items():
        print(f"| {name} | {n / 1000:,.0f}k | {n / per_call['bare Flask']:.2f}x |")


if __name__ == "__main__":
    main()
