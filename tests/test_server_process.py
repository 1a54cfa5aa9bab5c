"""The coal-mine process: clean shutdown, and the WSGI factory for external servers."""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path
from wsgiref.simple_server import make_server

import pytest

from coal_mine.server import make_app
from tests.helpers import ServerProcess, free_port, http_get


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
