"""The coal-mine process: clean shutdown, and the WSGI factory for external servers."""

from __future__ import annotations

import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from wsgiref.simple_server import make_server

import pytest

from coal_mine.server import make_app
from tests.helpers import REPO, ServerProcess, free_port, http_get


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_server_cleanly(tmp_path: Path, sig: int) -> None:
    server = ServerProcess(tmp_path / "srv").start()
    cid = server.call("create", name="Before stop", periodicity="60")[1]["canary"]["id"]
    assert server.call(f"/{cid}")[0] == 200
    assert server.stop(sig) == 0
    assert "Shutting down" in server.log()
    assert "Traceback" not in server.log()
    database = sqlite3.connect(tmp_path / "srv" / "coal-mine.sqlite3")
    assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert database.execute("SELECT COUNT(*) FROM history").fetchone() == (2,)


def test_make_app_serves_under_another_wsgi_server(tmp_path: Path) -> None:
    ini = tmp_path / "coal-mine.ini"
    ini.write_text(f"[sqlite]\npath = {tmp_path / 'factory.sqlite3'}\n[wsgi]\nauth_key = k\n")
    app = make_app(str(ini))
    port = free_port()
    httpd = make_server("127.0.0.1", port, app)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}/coal-mine/v1/canary"
        assert http_get(f"{base}/list")[0] == 401
        status, body = http_get(f"{base}/create?name=Factory&periodicity=60&auth_key=k")
        assert status == 200 and body["canary"]["name"] == "Factory"
    finally:
        httpd.shutdown()
        httpd.server_close()


NO_WORKER = "Health: no background worker has ever reported"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_make_app_warns_without_a_worker_from_its_first_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="coal_mine.health")
    ini = tmp_path / "coal-mine.ini"
    ini.write_text(f"[sqlite]\npath = {tmp_path / 'factory.sqlite3'}\n[health]\nworker_timeout = 3\n")

    def warning_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "health-check"]

    before = len(warning_threads())
    app = make_app(str(ini))
    assert app.ops.per_process is not None
    assert len(warning_threads()) == before  # nothing runs until the process serves
    httpd = make_server("127.0.0.1", free_port(), app)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        health = f"http://127.0.0.1:{httpd.server_port}/coal-mine/v1/health"
        for _ in range(5):
            assert http_get(health)[0] == 503
        warnings = lambda: [r for r in caplog.records if r.getMessage().startswith(NO_WORKER)]  # noqa: E731
        wait_until(lambda: bool(warnings()), 10, "the no-worker warning")
        assert warnings()[0].levelname == "WARNING" and "late canaries are not being detected" in (
            warnings()[0].getMessage()
        )
        assert len(warning_threads()) == before + 1  # once per process, however many requests
    finally:
        app.ops.per_process.stop()
        httpd.shutdown()
        httpd.server_close()
    wait_until(lambda: len(warning_threads()) == before, 10, "the warning thread to stop")


def test_gunicorn_preload_each_worker_process_warns_the_master_does_not(tmp_path: Path) -> None:
    """gunicorn --preload makes the app in its master, then forks the workers: the warning
    thread must start in each worker (also one booted after a worker died), never in the master."""
    pytest.importorskip("gunicorn", reason="gunicorn (requirements_dev.txt) is not installed")
    ini = tmp_path / "coal-mine.ini"
    ini.write_text(f"[sqlite]\npath = {tmp_path / 'g.sqlite3'}\n[health]\nworker_timeout = 2\n")
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log_path.open("wb") as log_file:
        master = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--preload",
                "--workers",
                "1",
                "--bind",
                f"127.0.0.1:{port}",
                f"coal_mine.server:make_app({str(ini)!r})",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    text = lambda: log_path.read_text(errors="replace")  # noqa: E731
    workers = lambda: re.findall(r"Booting worker with pid: (\d+)", text())  # noqa: E731
    health = f"http://127.0.0.1:{port}/coal-mine/v1/health"
    try:
        wait_until(lambda: bool(workers()), 30, "gunicorn's first worker")
        assert NO_WORKER not in text()  # the master made the app, and started nothing
        assert http_get(health)[0] == 503
        wait_until(lambda: text().count(NO_WORKER) == 1, 15, "the first worker's warning")
        os.kill(int(workers()[0]), signal.SIGKILL)
        wait_until(lambda: len(workers()) == 2, 30, "a new worker")

        def answered() -> bool:
            try:
                return http_get(health)[0] == 503
            except OSError:
                return False

        wait_until(answered, 15, "the new worker to answer")
        wait_until(lambda: text().count(NO_WORKER) == 2, 15, "the new worker's warning")
    finally:
        master.terminate()
        master.wait(30)
    assert text().count(NO_WORKER) == 2, text()
