"""coal-mine-run: run a command and report it to Coal Mine (start, exit status, output).

    coal-mine-run [--url URL] [--timeout SECONDS] ID -- COMMAND [ARGUMENT ...]

Pings `/<ID>/start`, runs the command with its output passed through (stdout and
stderr together, so cron still mails it), then POSTs the last 10 KB of that output
to `/<ID>/<exit status>`; a fresh `rid` pairs the two. Exits with the command's
status (128 + N when a signal N ended it; 127 when it cannot be started). A Coal
Mine server that cannot be reached is reported on stderr and never fails the job.

Uses only the standard library and nothing else of this package, so it works
from cron with any Python 3.11 and can be copied to a host as a single file.
The server is `--url`, else $COAL_MINE_URL, else host and port in cmcli's
~/.coal-mine.ini, else http://localhost.
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

OUTPUT_TAIL = 10240  # bytes of output sent with the exit status
TRIES = 3
_ID = re.compile(r"[a-z]{8}\Z")


def server_url(given: str | None) -> str:
    """The server's base URL (no trailing slash)."""
    url = given or os.environ.get("COAL_MINE_URL")
    if not url:
        config = configparser.ConfigParser()
        config.read(os.path.expanduser("~/.coal-mine.ini"))
        host = config.get("coal-mine", "host", fallback="localhost")
        port = config.get("coal-mine", "port", fallback="")
        url = host if "://" in host else f"http://{host}"
        if port and not re.search(r":\d+$", url.rstrip("/")):
            url = f"{url.rstrip('/')}:{port}"
    url = url.rstrip("/")
    return url[: -len("/coal-mine/v1/canary")] if url.endswith("/coal-mine/v1/canary") else url


def ping(url: str, body: bytes | None, timeout: float) -> bool:
    """GET (or POST `body`) with a few tries; False, with a warning on stderr, if all failed."""
    problem = ""
    for attempt in range(TRIES):
        if attempt:
            time.sleep(attempt)
        request = urllib.request.Request(
            url,
            data=body,
            method="POST" if body is not None else "GET",
            headers={"Content-Type": "text/plain; charset=utf-8", "User-Agent": "coal-mine-run"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
            return True
        except urllib.error.HTTPError as exc:
            problem = f"{exc.code} {exc.read().decode('utf-8', 'replace').strip()}"
            if exc.code < 500:
                break  # a wrong id or a bad request: trying again will not help
        except (OSError, ValueError) as exc:
            problem = str(getattr(exc, "reason", exc))
    sys.stderr.write(f"coal-mine-run: cannot report to {url.split('?')[0]}: {problem}\n")
    sys.stderr.flush()
    return False


def run_command(command: Sequence[str]) -> tuple[int, bytes]:
    """Run `command`, passing its output through; (exit status, the end of its output)."""
    tail = bytearray()
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        message = f"coal-mine-run: cannot run {command[0]}: {exc.strerror or exc}\n"
        sys.stderr.write(message)
        return 127, message.encode()
    assert process.stdout is not None
    out = sys.stdout.buffer
    while chunk := os.read(process.stdout.fileno(), 65536):
        out.write(chunk)
        out.flush()
        tail += chunk
        del tail[:-OUTPUT_TAIL]
    status = process.wait()
    return (128 - status if status < 0 else status), bytes(tail)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="coal-mine-run",
        description="Run COMMAND and report its start, exit status and output to a Coal Mine canary.",
        epilog="Example crontab line:  0 3 * * * coal-mine-run abcdefgh -- /usr/local/bin/backup.sh",
    )
    parser.add_argument("--url", help="the Coal Mine server, e.g. https://coal-mine.example.com")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (10)")
    parser.add_argument("id", help="the canary's 8-letter id")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGUMENT ...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    if not _ID.match(args.id):
        parser.error(f"{args.id!r} is not a canary id (8 lower-case letters)")
    base = f"{server_url(args.url)}/{args.id}"
    rid = secrets.token_hex(8)
    ping(f"{base}/start?rid={rid}", None, args.timeout)
    status, tail = run_command(command)
    ping(f"{base}/{min(status, 255)}?{urllib.parse.urlencode({'rid': rid})}", tail, args.timeout)
    return status


if __name__ == "__main__":
    sys.exit(main())
