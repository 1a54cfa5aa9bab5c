"""HTTPS served by the server itself, with a private CA made in the test; cmcli verifies it."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coal_mine.config import WsgiConfig
from coal_mine.limits import MAX_REQUEST_HEAD, MAX_REQUEST_LINE
from coal_mine.server import make_ssl_context
from tests.helpers import REPO, InProcessServer, ServerProcess, parse_response, raw_request, read_all, timed


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for localhost and 127.0.0.1: (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Test CA"))
        .issuer_name(_name("Test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https_server(tmp_path: Path, pki: tuple[Path, Path, Path]) -> Iterator[ServerProcess]:
    _, cert, key = pki
    process = ServerProcess(tmp_path / "server", auth_key="tls-key-123456")
    process.ini.write_text(
        process.ini.read_text().replace("[wsgi]\n", f"[wsgi]\ncertfile = {cert}\nkeyfile = {key}\n", 1)
    )
    with process:
        yield process


def client_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def https_get(url: str, context: ssl.SSLContext) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def cmcli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "coal_mine.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )


def test_server_speaks_https_with_the_configured_certificate(
    https_server: ServerProcess, pki: tuple[Path, Path, Path]
) -> None:
    ca = pki[0]
    base = f"https://localhost:{https_server.port}/coal-mine/v1/canary"
    status, body = https_get(
        f"{base}/create?name=tls&periodicity=60&auth_key=tls-key-123456", client_context(ca)
    )
    assert status == 200 and body["canary"]["name"] == "tls"
    status, body = https_get(
        f"https://127.0.0.1:{https_server.port}/{body['canary']['id']}", client_context(ca)
    )
    assert status == 200 and body["status"] == "ok"
    status, body = https_get(f"{base}/list", client_context(ca))
    assert status == 401
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{base}/list", timeout=10, context=ssl.create_default_context())
    assert "(HTTPS)" in https_server.log()
    assert "tls-key-123456" not in https_server.log()


def test_plain_http_to_the_https_port_gets_nothing_and_harms_nothing(
    https_server: ServerProcess, pki: tuple[Path, Path, Path]
) -> None:
    status, _ = raw_request(https_server.port, b"GET /coal-mine/v1/canary/list HTTP/1.0\r\n\r\n")
    assert status == 0
    status, _ = https_get(
        f"https://localhost:{https_server.port}/coal-mine/v1/canary/list?auth_key=tls-key-123456",
        client_context(pki[0]),
    )
    assert status == 200


def test_cmcli_verifies_the_certificate_and_takes_cacert(
    https_server: ServerProcess, pki: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    connection = ["--host", f"https://localhost:{https_server.port}", "--auth-key", "tls-key-123456"]
    refused = cmcli(home, *connection, "create", "--name", "cli", "--periodicity", "60")
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower()
    done = cmcli(
        home, *connection, "--cacert", str(pki[0]), "--json", "create", "--name", "cli", "--periodicity", "60"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["canary"]["name"] == "cli"
    listed = cmcli(home, *connection, "--cacert", str(pki[0]), "--json", "list")
    assert [c["name"] for c in json.loads(listed.stdout)["canaries"]] == ["cli"]


HEAD_TIMEOUT = 2.0
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01"  # a record header and one byte of it


@pytest.fixture
def tls_context(pki: tuple[Path, Path, Path]) -> ssl.SSLContext:
    context = make_ssl_context(WsgiConfig(certfile=str(pki[1]), keyfile=str(pki[2])))
    assert context is not None
    return context


def https_triggers(server: InProcessServer, canary_id: str, ca: Path, count: int) -> list[float]:
    """Seconds each of `count` HTTPS triggers took, each on a fresh connection and handshake."""
    latencies = []
    for _ in range(count):
        seconds, (status, body) = timed(
            raw_request,
            server.port,
            f"GET /{canary_id} HTTP/1.0\r\n\r\n".encode(),
            context=client_context(ca),
        )
        assert status == 200 and json.loads(body)["status"] == "ok"
        latencies.append(seconds)
    return latencies


def test_stalled_handshakes_hold_no_worker_and_are_cut_off(
    tls_context: ssl.SSLContext, pki: tuple[Path, Path, Path]
) -> None:
    with InProcessServer(ssl_context=tls_context, workers=2, request_timeout=HEAD_TIMEOUT) as server:
        canary_id = server.logic.create("job", 3600).id
        baseline = https_triggers(server, canary_id, pki[0], 10)
        stalled: list[tuple[socket.socket, float]] = []
        try:
            for stall in [PARTIAL_CLIENT_HELLO, b"\x16"] * 4:  # then silence
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=HEAD_TIMEOUT + 10)
                sock.sendall(stall)
                stalled.append((sock, time.monotonic()))
            under_attack = https_triggers(server, canary_id, pki[0], 10)
            cut_off = []
            for sock, connected in stalled:
                assert read_all(sock) == b""
                cut_off.append(time.monotonic() - connected)
        finally:
            for sock, _ in stalled:
                sock.close()
    # Eight stalled handshakes, two workers: had they held workers, triggers would wait seconds.
    assert max(under_attack) < max(0.5, 20 * statistics.median(baseline)), (baseline, under_attack)
    assert all(HEAD_TIMEOUT - 0.2 < seconds < HEAD_TIMEOUT + 2 for seconds in cut_off), cut_off


def test_plain_http_to_the_https_port_is_closed_at_once_and_logged(
    tls_context: ssl.SSLContext, pki: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="coal_mine.access")
    timeout = 10.0
    with InProcessServer(ssl_context=tls_context, workers=2, request_timeout=timeout) as server:
        canary_id = server.logic.create("job", 3600).id
        plain = [socket.create_connection(("127.0.0.1", server.port), timeout=timeout + 5) for _ in range(8)]
        try:
            for sock in plain:
                sock.sendall(f"GET /{canary_id} HTTP/1.0\r\n\r\n".encode())
            closed_after = []
            for sock in plain:
                seconds, raw = timed(read_all, sock)
                assert b"HTTP/" not in raw
                closed_after.append(seconds)
            assert https_triggers(server, canary_id, pki[0], 3)
        finally:
            for sock in plain:
                sock.close()
    assert sum(closed_after) < timeout / 2  # not held until the deadline
    failures = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failures) == 8 and all(m.startswith("127.0.0.1 ") for m in failures), failures
    assert all("\n" not in message for message in failures)
    assert len(server.logic.get(canary_id).history) == 3 + 1  # the HTTPS triggers and the creation


def test_https_head_arriving_in_pieces_is_served(
    tls_context: ssl.SSLContext, pki: tuple[Path, Path, Path]
) -> None:
    with InProcessServer(ssl_context=tls_context, workers=1, request_timeout=HEAD_TIMEOUT) as server:
        canary_id = server.logic.create("job", 3600).id
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain,
            client_context(pki[0]).wrap_socket(plain, server_hostname="localhost") as sock,
        ):
            for piece in (
                b"GET /",
                canary_id.encode(),
                b"?comment=slow HTTP/1.0\r\n",
                b"Host: x\r\n",
                b"\r\n",
            ):
                sock.sendall(piece)  # one TLS record each
                time.sleep(0.05)
            status, body = parse_response(read_all(sock))
        assert status == 200 and json.loads(body)["status"] == "ok"
        # A large head, many TLS records at once, just under the limit.
        filler = "".join(f"X-Filler-{i}: {'v' * 1000}\r\n" for i in range(MAX_REQUEST_HEAD // 1100))
        status, body = raw_request(
            server.port,
            f"GET /{canary_id}?comment=big HTTP/1.0\r\n{filler}\r\n".encode(),
            context=client_context(pki[0]),
        )
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert [entry[1] for entry in server.logic.get(canary_id).history[:2]] == [
            "Triggered (big)",
            "Triggered (slow)",
        ]


def test_https_request_limits_are_json_414_and_431(
    tls_context: ssl.SSLContext, pki: tuple[Path, Path, Path]
) -> None:
    context = client_context(pki[0])
    with InProcessServer(ssl_context=tls_context, workers=1, request_timeout=HEAD_TIMEOUT) as server:
        status, body = raw_request(server.port, b"GET /" + b"x" * (MAX_REQUEST_LINE + 10), context=context)
        assert status == 414 and str(MAX_REQUEST_LINE) in json.loads(body)["error"]
        headers = "".join(f"X-Filler-{i}: {'v' * 1000}\r\n" for i in range(MAX_REQUEST_HEAD // 1000 + 1))
        status, body = raw_request(
            server.port, f"GET /coal-mine/v1/canary/list HTTP/1.0\r\n{headers}".encode(), context=context
        )  # no blank line: the limit ends it
        assert status == 431 and str(MAX_REQUEST_HEAD) in json.loads(body)["error"]


def test_https_connections_past_max_pending_push_out_the_oldest(
    tls_context: ssl.SSLContext, pki: tuple[Path, Path, Path]
) -> None:
    context = client_context(pki[0])

    def stalled_handshake() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"\x16")
        return sock

    # The deadline is far off: whoever is closed within the socket timeout was pushed out.
    with InProcessServer(ssl_context=tls_context, workers=2, request_timeout=60, max_pending=5) as server:
        canary_id = server.logic.create("job", 3600).id
        waiting = []
        try:
            for _ in range(5):  # handshake done, request started, never finished
                plain = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                sock = context.wrap_socket(plain, server_hostname="localhost")
                sock.sendall(b"GET /coal-mine/v1/canary/li")
                waiting.append(sock)
            waiting += [stalled_handshake() for _ in range(3)]
            # The three oldest were pushed out, told over TLS that the server is busy.
            for sock in waiting[:3]:
                status, body = parse_response(read_all(sock))
                assert status == 503 and "busy" in json.loads(body)["error"]
            # The first trigger pushes out one more; the others find a free place.
            assert https_triggers(server, canary_id, pki[0], 3)
            waiting += [stalled_handshake() for _ in range(3)]  # one free place, then two out
            # The last of those was still mid-handshake: closed without an answer.
            assert [parse_response(read_all(sock))[0] for sock in waiting[3:6]] == [503, 503, 0]
        finally:
            for sock in waiting:
                sock.close()


def test_server_context_is_modern(pki: tuple[Path, Path, Path]) -> None:
    _, cert, key = pki
    context = make_ssl_context(WsgiConfig(certfile=str(cert), keyfile=str(key)))
    assert context is not None and context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert make_ssl_context(WsgiConfig()) is None


def test_unusable_certificate_stops_the_server_with_a_message(
    tmp_path: Path, pki: tuple[Path, Path, Path]
) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    process = ServerProcess(tmp_path / "server")
    process.ini.write_text(
        process.ini.read_text().replace("[wsgi]\n", f"[wsgi]\ncertfile = {bogus}\nkeyfile = {pki[2]}\n", 1)
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MONGODB_URI", None)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "coal_mine.server", "--web", "--config", str(process.ini)],
        capture_output=True,
        text=True,
        env=env,
        cwd=process.workdir,
        timeout=30,
    )
    assert result.returncode == 2 and time.monotonic() - start < 30
    assert "certfile" in result.stderr and "Traceback" not in result.stderr
