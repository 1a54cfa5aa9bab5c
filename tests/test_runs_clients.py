"""Run reporting from real client processes: cmcli's run commands and options, and the
coal-mine-run wrapper (standard library only, run as cron would run it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coal_mine.clock import FakeClock
from coal_mine.memory_store import MemoryStore
from coal_mine.models import Output
from coal_mine.run_wrapper import OUTPUT_TAIL
from tests.helpers import REPO, free_port
from tests.runs_support import RunServer

WRAPPER = REPO / "coal_mine" / "run_wrapper.py"


@pytest.fixture
def srv() -> Iterator[RunServer]:
    with RunServer(MemoryStore(), FakeClock(), max_body=20000, auth_key="sekrit") as server:
        yield server


def cmcli(srv: RunServer, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "coal_mine.cli", "--host", "127.0.0.1", "--port", str(srv.port),
         "--auth-key", "sekrit", "--json", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=30, check=False,
    )  # fmt: skip


def test_cmcli_run_commands(srv: RunServer, tmp_path: Path) -> None:
    done = cmcli(srv, tmp_path, "create", "--name", "Backup", "--periodicity", "3600", "--max-runtime", "60")
    assert done.returncode == 0, done.stderr
    cid = json.loads(done.stdout)["canary"]["id"]
    assert json.loads(done.stdout)["canary"]["max_runtime"] == 60.0
    done = cmcli(srv, tmp_path, "start", "--id", cid, "--rid", "r1", "--comment", "go")
    assert json.loads(done.stdout) == {
        "status": "ok",
        "recovered": False,
        "unpaused": False,
        "state": "running",
    }
    srv.clock.advance(2)
    done = cmcli(srv, tmp_path, "fail", "--slug", "backup", "--rid", "r1", "--exit-status", "4")
    assert json.loads(done.stdout)["duration"] == 2.0
    done = cmcli(srv, tmp_path, "log", "--name", "Backup", "--comment", "checked")
    assert json.loads(done.stdout)["state"] == "failed"
    assert srv.comments(cid)[:3] == [
        "Logged (checked)",
        "Failed (exit status 4), ran 2.000 s",
        "Started (go)",
    ]
    done = cmcli(srv, tmp_path, "list", "--state", "failed")
    assert [c["id"] for c in json.loads(done.stdout)["canaries"]] == [cid]
    done = cmcli(srv, tmp_path, "update", "--id", cid, "--max-runtime", "-")
    assert "max_runtime" not in json.loads(done.stdout)["canary"]
    done = cmcli(srv, tmp_path, "pause", "--id", cid, "--until", "600")
    assert json.loads(done.stdout)["canary"]["state"] == "paused"
    srv.tick(601)
    assert srv.canary(cid)["paused"] is False


def test_cmcli_get_output(srv: RunServer, tmp_path: Path) -> None:
    cid = srv.create()
    srv.request("POST", f"/{cid}/log", b"the output\n")
    done = cmcli(srv, tmp_path, "get", "--id", cid, "--output")
    assert [o["output"] for o in json.loads(done.stdout)["canary"]["outputs"]] == ["the output\n"]
    assert "outputs" not in json.loads(cmcli(srv, tmp_path, "get", "--id", cid).stdout)["canary"]


@pytest.mark.parametrize(
    "args",
    [("fail", "--id", "abcdefgh", "--exit-status", "256"), ("fail", "--id", "x", "--exit-status", "-1"),
     ("pause", "--id", "x", "--until"), ("list", "--state", "asleep"), ("create", "--name", "x",
     "--periodicity", "60", "--max-runtime", "soon"), ("log", "--id", "x", "--rid", "r")],
)  # fmt: skip
def test_cmcli_bad_arguments(srv: RunServer, tmp_path: Path, args: tuple[str, ...]) -> None:
    done = cmcli(srv, tmp_path, *args)
    assert done.returncode == 2 and "error" in done.stderr


def test_cmcli_server_errors(srv: RunServer, tmp_path: Path) -> None:
    done = cmcli(srv, tmp_path, "start", "--id", "abcdefgh")
    assert done.returncode == 1 and "404" in done.stderr
    cid = srv.create()
    done = cmcli(srv, tmp_path, "pause", "--id", cid, "--until", "yesterday")
    assert done.returncode == 1 and 'Bad \\"until\\" value' in done.stderr


# --- coal-mine-run ------------------------------------------------------------------------------


def cron_run(
    url: str, cid: str, *command: str, home: Path, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    """As cron runs a job: a bare environment, the system's python3 in isolated mode
    (no virtualenv, no PYTHONPATH, no site packages), the script by its path."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return subprocess.run(
        [python, "-I", str(WRAPPER), "--url", url, "--timeout", "5", cid, "--", *command],
        capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": str(home)}, cwd=home,
        timeout=timeout, check=False,
    )  # fmt: skip


def test_wrapper_reports_success_with_duration_and_output(srv: RunServer, tmp_path: Path) -> None:
    cid = srv.create(email="ops@example.com")
    done = cron_run(srv.base_url, cid, "sh", "-c", "echo hello; echo oops >&2", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hello\noops\n" and done.stderr == b""
    canary = srv.canary(cid, output="1")
    assert [c for _, c in canary["history"]][:2] == ["Triggered, ran 0.000 s", "Started"]
    assert canary["outputs"][0]["output"] == "hello\noops\n" and canary["state"] == "ok"


def test_wrapper_reports_failure_and_exits_with_its_status(srv: RunServer, tmp_path: Path) -> None:
    cid = srv.create(email="ops@example.com")
    script = f"yes a | head -c {OUTPUT_TAIL + 500}; echo END; exit 3"
    done = cron_run(srv.base_url, cid, "sh", "-c", script, home=tmp_path)
    assert done.returncode == 3
    canary = srv.canary(cid, output="1")
    assert canary["state"] == "failed" and canary["history"][0][1].startswith("Failed (exit status 3)")
    (output,) = canary["outputs"]
    assert output["bytes"] == OUTPUT_TAIL and output["output"].endswith("a\nEND\n")
    assert srv.kinds() == ["failed"]


def test_wrapper_reports_a_signal_and_a_missing_command(srv: RunServer, tmp_path: Path) -> None:
    cid = srv.create()
    assert cron_run(srv.base_url, cid, "sh", "-c", "kill -TERM $$", home=tmp_path).returncode == 143
    assert srv.comments(cid)[0].startswith("Failed (exit status 143)")
    done = cron_run(srv.base_url, cid, "/no/such/program", home=tmp_path)
    assert done.returncode == 127 and b"cannot run /no/such/program" in done.stderr
    assert srv.comments(cid)[0].startswith("Failed (exit status 127)")


def test_wrapper_never_fails_the_job_when_the_server_is_away(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = cron_run(url, "abcdefgh", "sh", "-c", "echo still ran", home=tmp_path)
    assert done.returncode == 0 and done.stdout == b"still ran\n"
    assert done.stderr.count(b"coal-mine-run: cannot report to") == 2


def test_wrapper_uses_cmcli_settings_and_rejects_bad_ids(srv: RunServer, tmp_path: Path) -> None:
    cid = srv.create()
    (tmp_path / ".coal-mine.ini").write_text(f"[coal-mine]\nhost = 127.0.0.1\nport = {srv.port}\n")
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([python, "-I", str(WRAPPER), cid, "--", "true"], env=env, timeout=30, check=False)
    assert done.returncode == 0 and srv.comments(cid)[0].startswith("Triggered")
    for args in (["Not-An-Id", "--", "true"], [cid]):
        done = subprocess.run([python, "-I", str(WRAPPER), *args], env=env, capture_output=True, timeout=30)
        assert done.returncode == 2 and b"error:" in done.stderr
    done = cron_run(srv.base_url, "abcdefgh", "true", home=tmp_path)  # unknown canary: said, not retried
    assert done.returncode == 0 and done.stderr.count(b"404") == 2


def readme_crontab_lines() -> list[str]:
    section = (REPO / "README.md").read_text().split("## Reporting run status", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("0 3 * * * ")]


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed: the README's curl line needs it"
)
@pytest.mark.parametrize("exit_status", [0, 5])
def test_readme_crontab_lines_work(srv: RunServer, tmp_path: Path, exit_status: int) -> None:
    lines = readme_crontab_lines()
    assert len(lines) == 2
    job = tmp_path / "backup.sh"
    job.write_text(f'#!/bin/sh\necho backing up "$@"\nexit {exit_status}\n')
    job.chmod(0o755)
    wrapper = f"{shutil.which('python3', path='/usr/bin:/bin') or sys.executable} -I {WRAPPER}"
    for number, line in enumerate(lines):
        cid = srv.create(f"Job {number}")
        command = line.removeprefix("0 3 * * * ").replace("http://coal-mine.example.com", srv.base_url)
        command = command.replace("fbkvlsby", cid).replace("/usr/local/bin/backup.sh", str(job))
        command = command.replace("coal-mine-run ", f"{wrapper} ").replace(
            "/tmp/backup.log", str(tmp_path / "log")
        )
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=60, check=False)
        canary = srv.canary(cid, output="1")
        comments = [comment for _, comment in canary["history"]]
        expected = "Triggered, ran" if exit_status == 0 else f"Failed (exit status {exit_status}), ran"
        assert comments[0].startswith(expected) and comments[1] == "Started", (line, comments)
        assert canary["outputs"][0]["output"].startswith("backing up"), line


def test_the_dashboard_shows_a_jobs_output(tmp_path: Path) -> None:
    from tests.ui_support import Client, DashboardServer

    with DashboardServer(tmp_path) as server:
        canary = server.logic.create("job", 3600)
        server.logic.runs.report(canary.id, "fail", exit_status=2, output=Output("<b>disk</b> full\n", 18))
        page = Client(server.port).get(f"canary/{canary.id}")[2]
    assert '<h2 id="output-h">Output</h2>' in page
    assert '<pre class="output">&lt;b&gt;disk&lt;/b&gt; full\n</pre>' in page
    assert "<dt>state</dt><dd>failed</dd>" in page
