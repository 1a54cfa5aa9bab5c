"""The `coal-mine` server process: configuration, store, web and background work."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Sequence

from coal_mine.abstract_store import AbstractStore
from coal_mine.api import Api
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import Clock
from coal_mine.config import (
    Config,
    ConfigError,
    LoggingConfig,
    MongoConfig,
    PostgresConfig,
    WsgiConfig,
    load_config,
)
from coal_mine.http_server import PooledWSGIServer
from coal_mine.logs import formatter
from coal_mine.models import CoalMineError
from coal_mine.operations import PerProcess, start_no_worker_warning, start_operations

log = logging.getLogger("coal_mine")


def open_store(config: Config) -> AbstractStore:
    """Open the configured store (SQLite unless MongoDB or PostgreSQL is configured)."""
    if isinstance(config.store, PostgresConfig):
        from coal_mine.postgres_store import PostgresStore

        try:
            # One connection per request worker, plus the watcher's and the sender's.
            postgres = PostgresStore(
                config.store.uri,
                max_connections=config.wsgi.workers + 4,
                synchronous_commit=config.store.synchronous_commit,
            )
        except CoalMineError as exc:
            raise ConfigError(f"{config.store.source}: {exc}") from None
        log.info("Using PostgreSQL database %s", postgres.database)
        return postgres
    if isinstance(config.store, MongoConfig):
        from coal_mine.mongo_store import MongoSettingsError, MongoStore

        settings = config.store
        try:
            # Validates every setting now; the client connects on first use.
            mongo = MongoStore.from_settings(
                settings.hosts, settings.database, settings.username, settings.password, settings.options
            )
        except MongoSettingsError as exc:
            raise ConfigError(f"{settings.setting_name(exc.setting)}: {exc}") from None
        log.info("Using MongoDB database %s", mongo.db.name)
        return mongo
    from coal_mine.sqlite_store import SQLiteStore

    path = os.path.abspath(config.store.path)
    try:
        store = SQLiteStore(path, synchronous=config.store.synchronous)
    except CoalMineError as exc:
        raise ConfigError(f"[sqlite] path: {exc}") from None
    log.info("Using SQLite database %s", path)
    return store


def setup_logging(config: LoggingConfig) -> None:
    """Log to the configured file (optionally rotated), else to stderr."""
    handler: logging.Handler
    try:
        if config.file and config.rotate:
            handler = logging.handlers.RotatingFileHandler(
                config.file, maxBytes=config.max_size, backupCount=config.backup_count
            )
        elif config.file:
            handler = logging.FileHandler(config.file)
        else:
            handler = logging.StreamHandler()
    except OSError as exc:
        raise ConfigError(f"[logging] file: cannot open {config.file}: {exc.strerror or exc}") from None
    handler.setFormatter(formatter(config.format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def ensure_indexes_until_done(store: AbstractStore, stop: threading.Event, max_wait: float = 30.0) -> None:
    """Every process (web ones too) makes sure the indexes exist. A database that is not
    up yet is waited for, the reason logged, never a reason to exit: the server serves
    (503 while the database is down) and connects on first use."""
    wait = 1.0
    while not stop.is_set():
        try:
            store.ensure_indexes()
            return
        except CoalMineError as exc:
            log.warning("Cannot ensure the database indexes yet (%s); retrying in %.0f s", exc, wait)
        stop.wait(wait)
        wait = min(max_wait, wait * 2)


def make_logic(config: Config, store: AbstractStore) -> BusinessLogic:
    """The business logic on `store`, with the server-wide alert settings."""
    from coal_mine.channels.setup import server_targets

    from coal_mine.alert_rules import AlertSettings

    alerts = AlertSettings(tuple(server_targets(config)), config.alerts.repeat)
    return BusinessLogic(store, Clock(), alerts=alerts)


def start_background(config: Config, logic: BusinessLogic) -> Callable[[], None]:
    """Start deadline watching and notification sending; returns a function that stops them.

    Writes made through `logic` in this process wake both threads at once; the
    periodic rescan picks up writes made by other processes.
    """
    from coal_mine.channels.setup import senders as build_senders
    from coal_mine.reminders import Reminder
    from coal_mine.run_alarms import RunAlarmWatcher
    from coal_mine.watcher import Watcher

    settings = config.watcher
    watcher = Watcher(
        logic, rescan_interval=settings.rescan_interval, retry_max_delay=settings.retry_max_delay
    )
    alarms = RunAlarmWatcher(logic, rescan_interval=settings.rescan_interval)
    reminder = Reminder(logic, rescan_interval=settings.rescan_interval)
    senders = build_senders(config, logic.store, logic.clock)
    previous = logic.on_change

    def changed() -> None:
        previous()
        watcher.wake()
        alarms.wake()
        reminder.wake()
        for sender in senders:
            sender.wake()

    logic.on_change = changed
    stop_operations = start_operations(config, logic, watcher, senders)
    watcher.start()
    alarms.start()
    reminder.start()
    for sender in senders:
        sender.start()

    def wake() -> None:
        watcher.wake()
        reminder.wake()
        for sender in senders:
            sender.wake()

    logic.store.listen(wake)  # other processes' changes, where the store can tell
    log.info("Deadline watcher and notification sender started (rescan every %g s)", settings.rescan_interval)

    def stop() -> None:
        logic.on_change = previous
        stop_operations()
        watcher.stop()
        alarms.stop()
        reminder.stop()
        for sender in senders:
            if sender.stop() and sender.channel is not None:
                sender.channel.close()

    return stop


def _nothing() -> None:
    pass


def make_app(config_path: str | None = None) -> Api:
    """WSGI application factory for external servers, e.g.
    `gunicorn 'coal_mine.server:make_app()'`. Serves HTTP only, like `--web`, and like it
    warns in the log while no background worker is alive (from each serving process)."""
    config = load_config(config_path)
    logic = make_logic(config, open_store(config))
    api = make_api(config, logic)
    api.ops.per_process = PerProcess(lambda: start_no_worker_warning(config, logic))
    return api


def make_api(config: Config, logic: BusinessLogic) -> Api:
    """The WSGI application on `logic`, with the channels its test sends use."""
    from coal_mine import alert_api
    from coal_mine.channels.setup import channels

    wsgi = config.wsgi
    api = Api(
        logic,
        auth_key=wsgi.auth_key,
        read_only_auth_key=wsgi.read_only_auth_key,
        web=config.web,
        worker_timeout=config.health.worker_timeout,
        max_body=wsgi.max_body,
    )
    alert_api.configure(api, channels(config))
    return api


def make_ssl_context(wsgi: WsgiConfig) -> ssl.SSLContext | None:
    """The server's TLS context for [wsgi] certfile/keyfile (TLS 1.2 or later), or None."""
    if not wsgi.certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(wsgi.certfile, wsgi.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"[wsgi] certfile/keyfile ({wsgi.certfile}, {wsgi.keyfile}): "
            f"cannot load the certificate and key: {exc}"
        ) from None
    return context


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="coal-mine",
        description="Coal Mine server: watches canaries and emails when one is late.",
        epilog="coal-mine copy-store --from URI --to URI [--force] copies one store into another "
        "(see coal-mine copy-store --help).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--web", action="store_true", help="serve HTTP only (no deadline work)")
    mode.add_argument(
        "--background", action="store_true", help="watch deadlines and send notifications only (no HTTP)"
    )
    parser.add_argument("--port", type=int, help="port to listen on (default: [wsgi] port, or 80)")
    parser.add_argument("--host", help="address to listen on (default: all interfaces)")
    parser.add_argument("--config", metavar="FILE", help="read this coal-mine.ini instead of searching")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; 2 (after one line on stderr) if it cannot start.
    As `coal-mine copy-store …` it copies one store into another instead."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["copy-store"]:
        from coal_mine.copy_store import main as copy_store

        return copy_store(arguments[1:])
    args = parse_args(arguments)
    try:
        return _serve(args)
    except ConfigError as exc:
        print(f"coal-mine: configuration error: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        setup_logging(config.logging)
    except OSError as exc:
        raise ConfigError(str(exc)) from None
    log.info("Configuration from %s", config.source)
    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"coal-mine: --port: {args.port} is not a port number", file=sys.stderr)
        return 2
    store = open_store(config)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    logic = make_logic(config, store)
    stop_background: Callable[[], None] = _nothing
    httpd = None
    try:
        threading.Thread(
            target=ensure_indexes_until_done, args=(store, stop), name="ensure-indexes", daemon=True
        ).start()
        if not args.web:
            stop_background = start_background(config, logic)
        else:
            stop_background = start_no_worker_warning(config, logic)
        if not args.background:
            port = config.wsgi.port if args.port is None else args.port
            host = config.wsgi.host if args.host is None else args.host
            wsgi = config.wsgi
            ssl_context = make_ssl_context(wsgi)
            try:
                httpd = PooledWSGIServer(
                    (host, port),
                    make_api(config, logic),
                    workers=wsgi.workers,
                    quick=Api.is_trigger_path,
                    request_timeout=wsgi.request_timeout,
                    ssl_context=ssl_context,
                    secrets=[k for k in (wsgi.auth_key, wsgi.read_only_auth_key) if k],
                )
            except OSError as exc:
                print(
                    f"coal-mine: cannot listen on {host or '*'}:{port}: {exc.strerror or exc}"
                    " (choose another with --port or [wsgi] port)",
                    file=sys.stderr,
                )
                return 2
            if not wsgi.auth_key:
                log.warning("Server authentication DISABLED (no [wsgi] auth_key)")
                if wsgi.read_only_auth_key:
                    log.warning("[wsgi] read_only_auth_key has no effect without [wsgi] auth_key")
            log.info(
                "Listening on %s:%d (%s)",
                host or "*",
                httpd.server_address[1],
                "HTTPS" if ssl_context else "HTTP",
            )
            threading.Thread(target=httpd.serve_forever, name="http-accept", daemon=True).start()
        stop.wait()
        log.info("Shutting down")
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        stop_background()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
