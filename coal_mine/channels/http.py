"""One careful HTTP POST, for the webhook and slack channels.

- Only http and https; redirects are never followed (a 3xx is a refusal).
- Every address the host name resolves to is checked, and the connection goes to
  a checked address (no second look-up that DNS rebinding could change):
  loopback, private, link-local, multicast and reserved addresses are refused
  unless `allow_private` ([webhook] allow_private = true).
- One timeout (10 s by default) for connecting and for each read, and at most
  64 KiB of the answer is read.
- Only 2xx counts as delivered. 408, 429, 5xx and network errors are worth a
  retry; any other answer is a refusal a retry is unlikely to cure.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from coal_mine import __version__
from coal_mine.channels import DeliveryError

USER_AGENT = f"coal-mine/{__version__} (+https://github.com/quantopian/coal-mine)"
_MAX_ANSWER = 65536


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def resolve(host: str, port: int, *, allow_private: bool) -> list[tuple[int, str]]:
    """The (family, address) pairs to try for host:port, or DeliveryError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DeliveryError(f"cannot resolve {host}: {exc}", retryable=True) from exc
    addresses: list[tuple[int, str]] = list(
        dict.fromkeys((int(family), str(sockaddr[0])) for family, _, _, _, sockaddr in infos)
    )
    if not allow_private:
        bad = [address for _, address in addresses if _forbidden(address)]
        if bad:
            raise DeliveryError(
                f"refused: {host} resolves to the non-public address {bad[0]} "
                "([webhook] allow_private = true allows it)",
                retryable=False,
            )
    return addresses


def _connect(addresses: list[tuple[int, str]], port: int, timeout: float) -> socket.socket:
    error: OSError | None = None
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError("no address to connect to")


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: list[tuple[int, str]], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self.port, self.timeout or 10.0)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: list[tuple[int, str]], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._addresses = addresses

    def connect(self) -> None:
        sock = _connect(self._addresses, self.port, self.timeout or 10.0)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    allow_private: bool = False,
    timeout: float = 10.0,
) -> int:
    """POST `body` to `url`; the 2xx status, or DeliveryError."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise DeliveryError(f"bad URL: {exc}", retryable=False) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError("only http:// and https:// URLs with a host are allowed", retryable=False)
    addresses = resolve(parts.hostname, port, allow_private=allow_private)
    kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = kind(parts.hostname, port, addresses, timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(
            "POST", path, body=body, headers={"User-Agent": USER_AGENT, "Connection": "close", **headers}
        )
        response = connection.getresponse()
        answer = response.read(_MAX_ANSWER)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"POST failed: {type(exc).__name__}: {exc}", retryable=True) from exc
    finally:
        connection.close()
    if 200 <= status < 300:
        return status
    snippet = " ".join(answer[:200].decode("utf-8", errors="replace").split())
    detail = f"HTTP {status} {response.reason}" + (f": {snippet}" if snippet else "")
    if 300 <= status < 400:
        raise DeliveryError(f"{detail} (redirects are not followed)", retryable=False)
    raise DeliveryError(detail, retryable=status in (408, 429) or status >= 500)


def post_each(
    targets: Sequence[str],
    body: bytes,
    headers: Callable[[], Mapping[str, str]],
    *,
    allow_private: bool,
    timeout: float,
) -> dict[str, DeliveryError]:
    """POST `body` to every target (headers made afresh for each); the refusals by URL.
    A single target's refusal is raised instead, so that its error says whether to retry."""
    refused: dict[str, DeliveryError] = {}
    for url in targets:
        try:
            post(url, body, headers(), allow_private=allow_private, timeout=timeout)
        except DeliveryError as exc:
            if len(targets) == 1:
                raise
            refused[url] = exc
    return refused
