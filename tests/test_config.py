"""Configuration: ini files, the environment mode, and failing fast naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coal_mine.config import ConfigError, MongoConfig, SQLiteConfig, load_config
from tests.helpers import REPO, free_port, http_get, wait_for_port


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "coal-mine.ini"
    path.write_text(text)
    return str(path)


def test_defaults_without_any_file(tmp_path: Path) -> None:
    config = load_config(environ={}, search_dirs=(str(tmp_path),))
    assert config.source == "defaults"
    assert config.store == SQLiteConfig(path="coal-mine.sqlite3")
    assert config.wsgi.port == 80 and config.wsgi.auth_key is None
    assert config.email.sender is None


def test_search_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (second / "coal-mine.ini").write_text("[wsgi]\nport = 8001\n")
    assert load_config(environ={}, search_dirs=(str(first), str(second))).wsgi.port == 8001
    (first / "coal-mine.ini").write_text("[wsgi]\nport = 8000\n")
    assert load_config(environ={}, search_dirs=(str(first), str(second))).wsgi.port == 8000


def test_full_ini(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[logging]
file = /tmp/cm.log
rotate = yes
max_size = 2048
backup_count = 2
[sqlite]
path = /var/lib/cm.db
synchronous = full
[email]
sender = alerts@example.com
host = smtp.example.com
port = 587
username = u
password = p
security = starttls
[wsgi]
port = 8080
auth_key = k
""",
    )
    config = load_config(path)
    assert config.store == SQLiteConfig(path="/var/lib/cm.db", synchronous="full")
    assert (
        config.logging.file,
        config.logging.rotate,
        config.logging.max_size,
        config.logging.backup_count,
    ) == ("/tmp/cm.log", True, 2048, 2)
    assert (
        config.email.sender,
        config.email.host,
        config.email.port,
        config.email.username,
        config.email.security,
    ) == ("alerts@example.com", "smtp.example.com", 587, "u", "starttls")
    assert (config.wsgi.port, config.wsgi.auth_key) == (8080, "k")


def test_mongodb_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[mongodb]\nhosts = db1,db2\ndatabase = coal\nreplicaSet = rs0\n")
    store = load_config(path).store
    assert isinstance(store, MongoConfig)
    assert (store.hosts, store.database) == ("db1,db2", "coal")
    assert {k.lower(): v for k, v in store.options.items()} == {"replicaset": "rs0"}


def test_environment_mode(tmp_path: Path) -> None:
    (tmp_path / "coal-mine.ini").write_text("[wsgi]\nport = 1\n")  # not read in this mode
    config = load_config(
        environ={
            "MONGODB_URI": "mongodb://db/coal",
            "EMAIL_SENDER": "a@b",
            "SMTP_HOST": "mail",
            "SMTP_PORT": "2525",
            "SMTP_USERNAME": "u",
            "SMTP_PASSWORD": "p",
            "WSGI_PORT": "5000",
            "WSGI_AUTH_KEY": "key",
            "SMTP_SECURITY": "ssl",
        },
        search_dirs=(str(tmp_path),),
    )
    assert config.source == "environment"
    assert config.store.hosts == "mongodb://db/coal"
    assert (config.email.sender, config.email.host, config.email.port, config.email.security) == (
        "a@b",
        "mail",
        2525,
        "ssl",
    )
    assert (config.wsgi.port, config.wsgi.auth_key) == (5000, "key")


@pytest.mark.parametrize(
    "text, setting",
    [
        ("[wsgi]\nport = eighty\n", "[wsgi] port"),
        ("[wsgi]\nport = 70000\n", "[wsgi] port"),
        ("[wsgi]\nworkers = 0\n", "[wsgi] workers"),
        ("[wsgi]\ncertfile = /nonexistent.pem\nkeyfile = /nonexistent.key\n", "[wsgi] certfile"),
        ("[wsgi]\ncertfile = /etc/hostname\n", "[wsgi] keyfile"),
        ("[email]\nhost = mail\n", "[email] sender"),
        ("[email]\nsender = a@b\nport = x\n", "[email] port"),
        ("[email]\nsender = a@b\nsecurity = tls13\n", "[email] security"),
        ("[email]\nsender = a@b\nusername = u\n", "[email] username and password"),
        ("[email]\nsender = a@b\ntimeout = -1\n", "[email] timeout"),
        ("[logging]\nrotate = sometimes\n", "[logging] rotate"),
        ("[logging]\nmax_size = big\n", "[logging] max_size"),
        ("[logging]\nbackup_count = -1\n", "[logging] backup_count"),
        ("[sqlite]\nsynchronous = off\n", "[sqlite] synchronous"),
        ("[mongodb]\ndatabase = x\n", "[mongodb] hosts"),
        ("[mongodb]\nhosts = h\n[sqlite]\npath = x\n", "[mongodb] and [sqlite]"),
        ("[watcher]\nrescan_interval = soon\n", "[watcher] rescan_interval"),
        ("[health]\nworker_timeout = 0\n", "[health] worker_timeout"),
        ("[health]\nworker_timeout = a minute\n", "[health] worker_timeout"),
        ("[watchdog]\nurl = ftp://example.com/x\n", "[watchdog] url"),
        ("[watchdog]\nurl = example.com/ping\n", "[watchdog] url"),
        ("[watchdog]\nurl = http://x\ntimeout = never\n", "[watchdog] timeout"),
        ("[logging]\nformat = xml\n", "[logging] format"),
        ("[wsig]\nport = 1\n", "unknown section [wsig]"),
        ("[wsgi]\nprot = 1\n", "unknown setting [wsgi] prot"),
        ("not an ini file\n", "cannot read configuration"),
    ],
)
def test_malformed_settings_are_named(tmp_path: Path, text: str, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert setting in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "environ, setting",
    [
        ({"WSGI_PORT": "x"}, "WSGI_PORT"),
        ({"SMTP_PORT": "0"}, "SMTP_PORT"),
        ({"SMTP_USERNAME": "u"}, "SMTP_USERNAME and SMTP_PASSWORD"),
        ({"SMTP_SECURITY": "maybe"}, "SMTP_SECURITY"),
    ],
)
def test_malformed_environment_is_named(environ: dict, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"MONGODB_URI": "mongodb://db/x", **environ})
    assert setting in str(info.value)


def test_operations_settings(tmp_path: Path) -> None:
    text = (
        "[health]\nworker_timeout = 90\n[watchdog]\nurl = https://hc.example/ping/x\ntimeout = 5\n"
        "[logging]\nformat = JSON\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.health.worker_timeout == 90.0
    assert (config.watchdog.url, config.watchdog.timeout) == ("https://hc.example/ping/x", 5.0)
    assert config.logging.format == "json"
    defaults = load_config(environ={}, search_dirs=(str(tmp_path / "none"),))
    assert (defaults.health.worker_timeout, defaults.watchdog.url, defaults.logging.format) == (
        60.0,
        None,
        "text",
    )
    environment = load_config(environ={"MONGODB_URI": "mongodb://db/x", "WATCHDOG_URL": "http://w/ping"})
    assert environment.watchdog.url == "http://w/ping"
    with pytest.raises(ConfigError, match="WATCHDOG_URL"):
        load_config(environ={"MONGODB_URI": "mongodb://db/x", "WATCHDOG_URL": "w/ping"})


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config"):
        load_config(str(tmp_path / "nope.ini"))


def run_server(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    for name in ("MONGODB_URI", "POSTGRESQL_URI", "DATABASE_URL"):
        if name not in (env or {}):
            environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "coal_mine.server", *args],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_server_refuses_bad_config_with_one_line(tmp_path: Path) -> None:
    write(tmp_path, "[wsgi]\nport = eighty\n")
    result = run_server(tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'coal-mine: configuration error: [wsgi] port: "eighty" is not a whole number'
    ]


def test_server_reports_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_server(tmp_path, "--host", "127.0.0.1", "--port", str(busy.getsockname()[1]))
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in result.stderr and "Traceback" not in result.stderr


def test_server_refuses_bad_port_option(tmp_path: Path) -> None:
    result = run_server(tmp_path, "--port", "99999")
    assert result.returncode == 2 and "--port" in result.stderr


def test_zero_config_start_uses_sqlite_in_current_directory(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MONGODB_URI", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "coal_mine.server", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, process=process)
        status, body = http_get(f"http://127.0.0.1:{port}/coal-mine/v1/canary/create?name=z&periodicity=5")
        assert status == 200 and body["status"] == "ok"
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    assert process.returncode == 0
    database = tmp_path / "coal-mine.sqlite3"
    assert database.exists()
    assert f"Using SQLite database {database}" in output


def test_example_file_documents_every_setting_and_parses(tmp_path: Path) -> None:
    from coal_mine.config import _KNOWN

    example = (REPO / "coal-mine.ini.example").read_text()
    for section, keys in _KNOWN.items():
        assert f"[{section}]" in example, section
        for key in keys:
            assert f"\n{key} =" in example or f"\n# {key} =" in example, (section, key)
    config = load_config(write(tmp_path, example))
    assert config.store == SQLiteConfig() and config.wsgi.port == 80
