"""Reading customers' email replies: time and peak memory of parse_inbound and reply_of.

    .venv/bin/python bench/inbound.py [--mb 29] [--repeat 50]

A post with one ``--mb`` MB attachment (SendGrid's limit is 30 MB for the whole mail)
in default and raw mode: parse time and Python's peak allocation (tracemalloc) over
the body's size. Then the median time of parse_inbound + reply_of for ordinary replies:
the real Gmail capture 01, a French Gmail reply with quoted history and an HTML-only
Outlook reply.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import inbound_posts as posts  # noqa: E402
from workers.core.inbound import Attachment, parse_inbound, reply_of  # noqa: E402


def big_post(mode: str, megabytes: float) -> None:
    data = os.urandom(int(megabytes * 1024 * 1024))
    content_type, body = posts.inbound_post(mode, attachments=[Attachment("dump.bin", "application/octet-stream", data)])
    started = time.perf_counter()
    mail = parse_inbound(content_type, body)
    elapsed = time.perf_counter() - started
    assert mail.attachments[0].data == data
    tracemalloc.start()
    parse_inbound(content_type, body)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{mode:8} {len(body) / 1e6:6.1f} MB post: parse {elapsed:5.2f} s, "
          f"peak {peak / 1e6:6.0f} MB = {peak / len(body):4.1f} x the body")


def reply_time(name: str, content_type: str, body: bytes, repeat: int) -> None:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        reply_of(parse_inbound(content_type, body))
        times.append(time.perf_counter() - started)
    print(f"{name:34} {len(body) / 1e3:6.1f} kB: parse + reply_of median {statistics.median(times) * 1e3:5.1f} ms, "
          f"max {max(times) * 1e3:5.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=29)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    for mode in ("default", "raw"):
        big_post(mode, args.mb)
    capture = next((ROOT / "tests/payloads/sendgrid").glob("01-*.multipart.txt")).read_bytes()
    reply_of(parse_inbound(posts.CONTENT_TYPE, capture))      # warm-up: compiled patterns
    reply_time("capture 01 (Gmail, quoted history)", posts.CONTENT_TYPE, capture, args.repeat)
    reply_time("French Gmail reply (text + html)", *posts.french_reply(), args.repeat)
    reply_time("HTML-only Outlook reply", *posts.html_only_reply(), args.repeat)


if __name__ == "__main__":
    main()
