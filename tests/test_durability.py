"""An acknowledged trigger is committed: it survives `kill -9` of the server mid-burst."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import ServerProcess


def test_acknowledged_triggers_survive_kill_9(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv").start()
    ids = [server.call("create", name=f"Burst {i}", periodicity="3600")[1]["canary"]["id"] for i in range(4)]
    acknowledged: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def fire(worker: int) -> None:
        n = 0
        while not stop.is_set() and n < 200:
            cid, comment = ids[n % len(ids)], f"w{worker}-{n}"
            n += 1
            try:
                with urllib.request.urlopen(f"{server.base_url}/{cid}?comment={comment}", timeout=5) as r:
                    if r.status == 200 and b'"status": "ok"' in r.read():
                        with lock:
                            acknowledged.append((cid, comment))
            except (urllib.error.URLError, http.client.HTTPException, OSError):
                return  # the server is gone (a cut-off answer is no acknowledgement)

    threads = [threading.Thread(target=fire, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 150 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.kill()  # SIGKILL in the middle of the burst
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) >= 150

    with ServerProcess(tmp_path / "srv", port=server.port) as restarted:
        stored = set()
        for cid in ids:
            status, body = restarted.call("get", id=cid)
            assert status == 200
            stored |= {(cid, c[len("Triggered (") : -1]) for _, c in body["canary"]["history"]}
    missing = [a for a in acknowledged if a not in stored]
    assert missing == []
