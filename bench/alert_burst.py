#!/usr/bin/env python3
"""1,000 canaries late in the same second, each with an email and a webhook target:

    .venv/bin/python bench/alert_burst.py [--burst 1000]

Prints the seconds from the start of that second until the last of the 2,000
deliveries arrived (target: within 5 s of the deadline), and, in the same run,
against the same receivers, the raw-send baseline: the same 1,000 emails over
one smtplib connection and 1,000 webhook POSTs with http.client, one after the
other. The server under test is a real `coal-mine --background` process on a
real SQLite file; the receivers (aiosmtpd and an HTTP server) run in this
process. The SMTP-only figure is bench/notify_latency.py's scenario (b).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coal_mine.business_logic import BusinessLogic  # noqa: E402
from coal_mine.channels.email import build_message  # noqa: E402
from coal_mine.clock import Clock  # noqa: E402
from coal_mine.models import Notification  # noqa: E402
from coal_mine.sqlite_store import SQLiteStore  # noqa: E402
from tests.http_sink import HTTPSink  # noqa: E402
from tests.smtp_sink import SMTPSink  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
import notify_latency  # noqa: E402
from notify_latency import stop  # noqa: E402

LEAD = 4.0  # seconds between setting up and the burst (server start-up fits in it)


def start_background(workdir: Path, db: Path, smtp_port: int) -> subprocess.Popen:
    """notify_latency's background process, allowed to post to the local webhook receiver."""
    return notify_latency.start_background(workdir, db, smtp_port, "[webhook]\nallow_private = true\n")


def wait_all(smtp: SMTPSink, http: HTTPSink, ids: set[str], timeout: float) -> tuple[float, float]:
    """Wait until every canary in `ids` has its email and its webhook post; the last arrival of each."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        mails = {m.canary: m.arrived for m in list(smtp.messages) if m.canary in ids}
        posts = {}
        for post in list(http.posts):
            document = json.loads(post.body)
            if document.get("id") in ids:
                posts[document["id"]] = post.arrived
        if len(mails) == len(posts) == len(ids):
            return max(mails.values()), max(posts.values())
        time.sleep(0.1)
    raise SystemExit(f"only {len(mails)} emails and {len(posts)} posts of {len(ids)} arrived in {timeout} s")


def burst(smtp: SMTPSink, http: HTTPSink, workdir: Path, count: int) -> tuple[float, float, float]:
    db = workdir / "burst.sqlite3"
    logic = BusinessLogic(SQLiteStore(str(db)), Clock())
    second = int(time.time() + LEAD + count * 0.003) + 1
    deadlines = {}
    for i in range(count):
        target = second + 0.005 + 0.99 * i / count
        canary = logic.create(
            f"burst {i}",
            round(target - time.time(), 3),
            emails=["ops@example.com"],
            webhooks=[http.url("/hook")],
        )
        deadlines[canary.id] = canary.deadline.timestamp()  # type: ignore[union-attr]
    logic.store.close()
    assert all(second <= d < second + 1 for d in deadlines.values()), "set-up was too slow"
    process = start_background(workdir, db, smtp.port)
    try:
        last_mail, last_post = wait_all(smtp, http, set(deadlines), timeout=LEAD + 120)
    finally:
        stop(process)
    last = max(last_mail, last_post)
    return last - second, last - max(deadlines.values()), last_mail - second


def _raw(smtp_port: int, http_port: int, count: int, queue: multiprocessing.Queue) -> None:
    now = datetime.now(UTC)
    messages, bodies = [], []
    for i in range(count):
        payload = {
            "id": f"raw{i:05d}",
            "name": f"burst {i}",
            "emails": ["ops@example.com"],
            "deadline": now.isoformat(),
            "history": [[now.isoformat(), "Canary created"]],
        }
        note = Notification(i, f"raw{i:05d}", "late", now, payload, not_before=now)
        messages.append(build_message(note, "bench@example.net", now=now))
        bodies.append(json.dumps({"version": 1, "event": "late", **payload}).encode())
    started = time.time()
    with smtplib.SMTP("127.0.0.1", smtp_port, local_hostname="bench", timeout=30) as client:
        for message in messages:
            client.send_message(message)
    mail_done = time.time()
    for body in bodies:
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        connection.request("POST", "/raw", body=body, headers={"Content-Type": "application/json"})
        connection.getresponse().read()
        connection.close()
    queue.put((started, mail_done, time.time()))


def raw_baseline(smtp: SMTPSink, http: HTTPSink, count: int) -> tuple[float, float]:
    """Seconds for the raw emails, and for the raw posts after them (another process)."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    worker = multiprocessing.Process(target=_raw, args=(smtp.port, http.port, count, queue))
    worker.start()
    started, mail_done, posts_done = queue.get(timeout=300)
    worker.join()
    return mail_done - started, posts_done - mail_done


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--burst", type=int, default=1000, help="canaries due in the same second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SMTPSink() as smtp, HTTPSink() as http:
        mail_raw, post_raw = raw_baseline(smtp, http, args.burst)
        print(
            f"baseline: {args.burst} emails raw over one SMTP connection {mail_raw:.2f} s; "
            f"{args.burst} webhook POSTs raw, one after the other, {post_raw:.2f} s; "
            f"together {mail_raw + post_raw:.2f} s"
        )
        from_start, from_last, mail_only = burst(smtp, http, Path(tmp), args.burst)
        print(
            f"{args.burst} canaries due in the same second, each with an email and a webhook: last of "
            f"{2 * args.burst} deliveries {from_start:.2f} s after the start of that second "
            f"({from_last:.2f} s after the last deadline; target <= 5 s); last email at {mail_only:.2f} s"
        )


if __name__ == "__main__":
    main()
