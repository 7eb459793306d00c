"""One POST to a customer's URL, safely: we are a server that anyone with an API key can make
send requests, so a delivery must not reach our own network, hang a worker, or fill its memory.

- The host is resolved at delivery time and every address it resolves to must be public
  (not loopback, private, link-local, the cloud metadata address, CGNAT, multicast or reserved),
  unless WEBHOOK_ALLOW_PRIVATE_TARGETS; the connection then goes to the address that was checked
  (TLS still verifies the certificate for the host name), so the name cannot be re-pointed
  between the check and the connection.
- Connect and read time-outs, and a total deadline on reading the answer; at most
  WEBHOOK_MAX_RESPONSE_BYTES of it are read. No redirect is followed; nothing is retried here.

urllib3 (which requests is built on) does the HTTP; what it lacks for this is the address check
and the pinning, done here.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from django.conf import settings


class TargetRefused(Exception):
    """The URL may not be delivered to (a private address, a bad scheme)."""


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    body: bytes
    latency_ms: int
    error: str = ""


def address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str) -> None:
    """What can be said of a URL without resolving it (when it is saved): raises TargetRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("url must be an http or https URL")
    if settings.WEBHOOK_ALLOW_PRIVATE_TARGETS:
        return
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        if parts.hostname.lower() in ("localhost", "localhost.localdomain") or (
            parts.hostname.lower().endswith(".localhost")
        ):
            raise TargetRefused("url must not point at a private address") from None
        return
    if not address_allowed(str(literal)):
        raise TargetRefused("url must not point at a private address")


def _resolve(host: str, port: int) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetRefused(f"{host} does not resolve ({exc.strerror}).") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not settings.WEBHOOK_ALLOW_PRIVATE_TARGETS:
        refused = [a for a in addresses if not address_allowed(a)]
        if refused:
            raise TargetRefused(f"{host} resolves to a private address ({refused[0]}).")
    return addresses[0]


def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    started = time.monotonic()

    def answer(status: int | None, content: bytes = b"", error: str = "") -> Answer:
        latency = int((time.monotonic() - started) * 1000)
        return Answer(status_code=status, body=content, latency_ms=latency, error=error[:300])

    try:
        check_url(url)
        parts = urlsplit(url)
        assert parts.hostname is not None
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        address = _resolve(parts.hostname, port)
    except (TargetRefused, ValueError) as exc:
        return answer(None, error=str(exc))
    connect = settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS
    total = settings.WEBHOOK_TIMEOUT_SECONDS
    timeout = urllib3.Timeout(connect=connect, read=total)
    pool: urllib3.HTTPConnectionPool
    if https:
        pool = urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            server_hostname=parts.hostname,
            assert_hostname=parts.hostname,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1)
    default_port = 443 if https else 80
    host_header = parts.hostname if port == default_port else f"{parts.hostname}:{port}"
    if ":" in parts.hostname and port == default_port:  # an IPv6 literal
        host_header = f"[{parts.hostname}]"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        with pool:
            response = pool.urlopen(
                "POST",
                path,
                body=body,
                headers={**headers, "Host": host_header},
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
            try:
                content = _read_capped(response, deadline=started + total)
            finally:
                response.release_conn()
    except TimeoutError as exc:
        return answer(None, error=f"timed out: {exc}")
    except urllib3.exceptions.HTTPError as exc:
        return answer(None, error=_describe(exc))
    except OSError as exc:
        return answer(None, error=f"connection failed: {exc}")
    return answer(response.status, content)


def _read_capped(response: urllib3.BaseHTTPResponse, *, deadline: float) -> bytes:
    cap = settings.WEBHOOK_MAX_RESPONSE_BYTES
    chunks: list[bytes] = []
    size = 0
    while size < cap:
        if time.monotonic() > deadline:
            raise TimeoutError("the answer took too long to arrive")
        chunk = response.read(min(8192, cap - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _describe(exc: urllib3.exceptions.HTTPError) -> str:
    if isinstance(
        exc, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError)
    ):
        return "timed out"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "connection refused"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection closed before an answer"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return "TLS failed"
    return type(exc).__name__
