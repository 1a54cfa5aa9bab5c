"""HTTPS served by the server itself, with a private CA made in the test; cmcli verifies it."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
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
from coal_mine.server import make_ssl_context
from tests.hardening_support import InProcessServer, raw_request, read_all, timed
from tests.helpers import REPO, ServerProcess


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for localhost and 127.0.0.1: (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("Test CA")).issuer_name(_name("Test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https_server(tmp_path: Path, pki: tuple[Path, Path, Path]) -> Iterator[ServerProcess]:
    _, cert, key = pki
    process = ServerProcess(tmp_path / "server", auth_key="tls-key-123456")
    process.ini.write_text(process.ini.read_text().replace(
        "[wsgi]\n", f"[wsgi]\ncertfile = {cert}\nkeyfile = {key}\n", 1))
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
    return subprocess.run([sys.executable, "-m", "coal_mine.cli", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=60)


def test_server_speaks_https_with_the_configured_certificate(https_server: ServerProcess,
                                                             pki: tuple[Path, Path, Path]) -> None:
    ca = pki[0]
    base = f"https://localhost:{https_server.port}/coal-mine/v1/canary"
    status, body = https_get(f"{base}/create?name=tls&periodicity=60&auth_key=tls-key-123456",
                             client_context(ca))
    assert status == 200 and body["canary"]["name"] == "tls"
    status, body = https_get(f"https://127.0.0.1:{https_server.port}/{body['canary']['id']}",
                             client_context(ca))
    assert status == 200 and body["status"] == "ok"
    status, body = https_get(f"{base}/list", client_context(ca))
    assert status == 401
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{base}/list", timeout=10, context=ssl.create_default_context())
    assert "(HTTPS)" in https_server.log()
    assert "tls-key-123456" not in https_server.log()


def test_plain_http_to_the_https_port_gets_nothing_and_harms_nothing(
        https_server: ServerProcess, pki: tuple[Path, Path, Path]) -> None:
    status, _ = raw_request(https_server.port, b"GET /coal-mine/v1/canary/list HTTP/1.0\r\n\r\n")
    assert status == 0
    status, _ = https_get(f"https://localhost:{https_server.port}/coal-mine/v1/canary/list"
                          "?auth_key=tls-key-123456", client_context(pki[0]))
    assert status == 200


def test_cmcli_verifies_the_certificate_and_takes_cacert(https_server: ServerProcess,
                                                         pki: tuple[Path, Path, Path],
                                                         tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    connection = ["--host", f"https://localhost:{https_server.port}", "--auth-key", "tls-key-123456"]
    refused = cmcli(home, *connection, "create", "--name", "cli", "--periodicity", "60")
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower()
    done = cmcli(home, *connection, "--cacert", str(pki[0]), "--json", "create", "--name", "cli",
                 "--periodicity", "60")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["canary"]["name"] == "cli"
    listed = cmcli(home, *connection, "--cacert", str(pki[0]), "--json", "list")
    assert [c["name"] for c in json.loads(listed.stdout)["canaries"]] == ["cli"]


def test_stalled_handshakes_are_cut_off_and_do_not_block_others(pki: tuple[Path, Path, Path]) -> None:
    ca, cert, key = pki
    context = make_ssl_context(WsgiConfig(certfile=str(cert), keyfile=str(key)))
    with InProcessServer(ssl_context=context, workers=4, request_timeout=1.5) as server:
        canary = server.logic.create("job", 3600)
        # Half a ClientHello each, then silence. (Each holds a worker until the deadline:
        # the TLS handshake happens in the workers, see docs/security.md.)
        stalled = []
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"\x16\x03\x01\x02\x00\x01")
            stalled.append(sock)
        try:
            seconds, (status, _) = timed(raw_request, server.port,
                                         f"GET /{canary.id} HTTP/1.0\r\n\r\n".encode(),
                                         context=client_context(ca))
            assert status == 200
            cut_off, raw = timed(read_all, stalled[0])
            assert raw == b"" and 0.5 < cut_off < 1.5 + 2
        finally:
            for sock in stalled:
                sock.close()
        assert seconds < 1.0


def test_server_context_is_modern(pki: tuple[Path, Path, Path]) -> None:
    _, cert, key = pki
    context = make_ssl_context(WsgiConfig(certfile=str(cert), keyfile=str(key)))
    assert context is not None and context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert make_ssl_context(WsgiConfig()) is None


def test_unusable_certificate_stops_the_server_with_a_message(tmp_path: Path,
                                                              pki: tuple[Path, Path, Path]) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    process = ServerProcess(tmp_path / "server")
    process.ini.write_text(process.ini.read_text().replace(
        "[wsgi]\n", f"[wsgi]\ncertfile = {bogus}\nkeyfile = {pki[2]}\n", 1))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MONGODB_URI", None)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "coal_mine.server", "--web", "--config", str(process.ini)],
                            capture_output=True, text=True, env=env, cwd=process.workdir, timeout=30)
    assert result.returncode == 2 and time.monotonic() - start < 30
    assert "certfile" in result.stderr and "Traceback" not in result.stderr
