"""Choosing PostgreSQL: the ini section, the environment, precedence, and failing at start
in one line that never shows the password. The live parts need COAL_MINE_TEST_POSTGRESQL_URI."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from coal_mine.config import ConfigError, MongoConfig, PostgresConfig, SQLiteConfig, load_config
from coal_mine.models import StoreUnavailableError
from coal_mine.postgres_db import SCHEMA_VERSION, redact, safe_uri
from coal_mine.postgres_store import PostgresStore
from tests.helpers import ServerProcess, free_port
from tests.stores import ThrowAwaySchema
from tests.test_config import run_server, write

URI = "postgresql://coal:pw@db.example.com:5432/coal"


def test_ini_section(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f"[postgresql]\nuri = {URI}\n"), environ={})
    assert config.store == PostgresConfig(uri=URI, source="[postgresql] uri")


def test_synchronous_commit_setting(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, f"[postgresql]\nuri = {URI}\nsynchronous_commit = Off\n"), environ={}
    )
    assert config.store == PostgresConfig(uri=URI, synchronous_commit="off")
    assert PostgresConfig(uri=URI).synchronous_commit == "on"  # the default waits for the flush


def test_synchronous_commit_reaches_every_pooled_connection() -> None:
    schema = ThrowAwaySchema()
    try:
        for setting in ("on", "off"):
            store = PostgresStore(schema.uri, max_connections=2, synchronous_commit=setting)
            try:
                shown = store._run("test", lambda conn: conn.execute("SHOW synchronous_commit").fetchone())
                assert shown == (setting,)
            finally:
                store.close()
    finally:
        schema.drop()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[postgresql]\n", "[postgresql] uri is required"),
        (f"[postgresql]\nuri = {URI}\nsynchronous_commit = local\n", "[postgresql] synchronous_commit"),
        ("[postgresql]\nuri = mysql://db/x\n", "[postgresql] uri: not a PostgreSQL URI"),
        ("[postgresql]\nuri = x\npool = 3\n", "unknown setting [postgresql] pool"),
        (f"[postgresql]\nuri = {URI}\n[sqlite]\npath = x\n", "[postgresql] and [sqlite] cannot be given"),
        (f"[mongodb]\nhosts = h\n[postgresql]\nuri = {URI}\n", "[mongodb] and [postgresql] cannot be given"),
    ],
)
def test_ini_errors_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_environment_names_postgresql(tmp_path: Path) -> None:
    empty = (str(tmp_path),)
    config = load_config(environ={"DATABASE_URL": URI}, search_dirs=empty)
    assert config.source == "environment"
    assert config.store == PostgresConfig(uri=URI, source="DATABASE_URL")
    # POSTGRESQL_URI is the explicit name, DATABASE_URL Heroku's: the explicit one wins.
    both = load_config(environ={"DATABASE_URL": URI, "POSTGRESQL_URI": "postgres://x/y"}, search_dirs=empty)
    assert both.store == PostgresConfig(uri="postgres://x/y", source="POSTGRESQL_URI")


def test_environment_beats_a_found_file_and_an_explicit_file_beats_both(tmp_path: Path) -> None:
    write(tmp_path, "[sqlite]\npath = x.sqlite3\n")
    found = load_config(environ={"DATABASE_URL": URI}, search_dirs=(str(tmp_path),))
    assert isinstance(found.store, PostgresConfig)
    explicit = load_config(str(tmp_path / "coal-mine.ini"), environ={"DATABASE_URL": URI})
    assert explicit.store == SQLiteConfig(path="x.sqlite3")


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"MONGODB_URI": "mongodb://db/x", "DATABASE_URL": URI}, "MONGODB_URI and DATABASE_URL both"),
        ({"MONGODB_URI": "mongodb://db/x", "POSTGRESQL_URI": URI}, "MONGODB_URI and POSTGRESQL_URI both"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL: not a PostgreSQL URI"),
    ],
)
def test_environment_errors(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ=environ, search_dirs=(str(tmp_path),))


def test_mongodb_environment_unchanged(tmp_path: Path) -> None:
    config = load_config(environ={"MONGODB_URI": "mongodb://db/x"}, search_dirs=(str(tmp_path),))
    assert isinstance(config.store, MongoConfig)


def test_redaction() -> None:
    assert safe_uri(URI) == "postgresql://coal:***@db.example.com:5432/coal"
    assert safe_uri("postgresql://db/x") == "postgresql://db/x"
    text = f"failed for {URI} with password pw and password=pw host=x"
    assert "pw" not in redact(text, URI).replace("password", "")


def test_unreachable_server_is_one_line_without_the_password(tmp_path: Path) -> None:
    uri = f"postgresql://coal:S3cret-pw@127.0.0.1:{free_port()}/coal"
    result = run_server(tmp_path, env={"DATABASE_URL": uri})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("coal-mine:")]
    assert line.startswith("coal-mine: configuration error: DATABASE_URL: Cannot use PostgreSQL:")
    assert "S3cret-pw" not in result.stderr + result.stdout


# --- against the live server --------------------------------------------------------------


@pytest.fixture
def schema() -> ThrowAwaySchema:
    made = ThrowAwaySchema()
    yield made
    made.drop()


def with_password(uri: str) -> str:
    """The URI with a password in it (the test cluster trusts local connections, so it is ignored)."""
    return uri.replace("postgresql://postgres@", "postgresql://postgres:Hush-9183@", 1)


def test_server_starts_on_postgresql_and_never_logs_the_password(
    tmp_path: Path, schema: ThrowAwaySchema
) -> None:
    uri = with_password(schema.uri)
    with ServerProcess(tmp_path, ini_extra=f"[postgresql]\nuri = {uri}\n") as server:
        status, body = server.call("create", name="On PostgreSQL", periodicity=60)
        assert status == 200
        assert server.call("get", id=body["canary"]["id"])[1]["canary"]["name"] == "On PostgreSQL"
    log = server.log()
    assert "Using PostgreSQL database coal_mine_test" in log
    assert "Hush-9183" not in log and uri not in log


def tables(uri: str) -> list[tuple[int]]:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT version FROM coal_mine_schema").fetchall()


def test_concurrent_starts_migrate_once(schema: ThrowAwaySchema) -> None:
    stores: list[PostgresStore] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(schema.uri, max_connections=1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert failures == [] and len(stores) == 6
    assert tables(schema.uri) == [(SCHEMA_VERSION,)]


def test_newer_schema_is_refused(schema: ThrowAwaySchema) -> None:
    PostgresStore(schema.uri, max_connections=1).close()
    with psycopg.connect(schema.uri) as conn:
        conn.execute("UPDATE coal_mine_schema SET version = 99")
    with pytest.raises(StoreUnavailableError, match="schema version 99, newer"):
        PostgresStore(schema.uri, max_connections=1)
