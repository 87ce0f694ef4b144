"""Where streamfill may connect: the SSRF policy, enforced where each connection is made.

PDS endpoints come from DID documents, `did:web` names any host, and servers redirect: all of
that is data written by strangers. Unless `allow_private` is set (the devnet, the demo and the
tests run on loopback), a URL is refused (`ForbiddenHost`) when

- its scheme is not http or https, or it carries credentials;
- its host is, or resolves to, any address that is not globally routable: loopback, private
  (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16 — cloud metadata — fe80::/10),
  multicast, unspecified, reserved, shared (100.64/10), documentation ranges; IPv4 embedded in
  IPv6 (::ffff:0:0/96, 6to4 2002::/16, NAT64 64:ff9b::/96) is judged by its IPv4 address.

Configured endpoints (the relays, the PLC directory, the labelers: `trusted`) are the operator's
choice and are never checked: a PLC mirror on the private network keeps working.

The address check runs in the connection pool's network backend (`GuardedBackend`): the host is
resolved once, every address is checked, and the socket is connected to one of those checked
addresses, never to a fresh lookup of the name. A DNS answer that changes between a check and the
connect (DNS rebinding) therefore cannot slip a private address through. TLS still verifies the
certificate against the host name. Limits: proxies from the environment are not used (the check
must see the real destination); `allow_private` is all or nothing.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import anyio
import httpcore

from atp.errors import ForbiddenHost

__all__ = ["GuardedBackend", "NetPolicy", "Target", "address_allowed"]

DEFAULT_PORTS = {"http": 80, "https": 443}
# Redirects a call follows at most; each hop is checked again. Real PDSes and relays use one.
DEFAULT_MAX_REDIRECTS = 3
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(ip: IPAddress) -> bool:
    """Whether `ip` is a globally routable unicast address (see the module docstring)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_allowed(embedded)
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_private
    )


class Target(NamedTuple):
    """A checked URL, split the way the connection pool wants it."""

    scheme: str
    host: str  # lowercase ASCII (IDNA), IPv6 without brackets
    port: int
    target: str  # path and query

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = DEFAULT_PORTS[self.scheme] == self.port
        return f"{self.scheme}://{host}{'' if default else f':{self.port}'}{self.target}"


def _ascii_host(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ForbiddenHost(f"host {host!r} is not a valid domain name", error="ForbiddenHost") from None


@dataclass(frozen=True, slots=True)
class NetPolicy:
    """The SSRF policy: refuse non-public destinations unless allowed or configured (trusted)."""

    allow_private: bool = False
    trusted: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    max_redirects: int = DEFAULT_MAX_REDIRECTS

    def trusting(self, urls: Iterable[str]) -> NetPolicy:
        """This policy, with the (host, port) of every configured URL in `urls` trusted."""
        extra = set()
        for url in urls:
            if url:
                target = self.parse(url if "://" in url else f"https://{url}", check=False)
                extra.add((target.host, target.port))
        return replace(self, trusted=self.trusted | extra)

    def trusts(self, host: str, port: int) -> bool:
        return self.allow_private or (host, port) in self.trusted

    def parse(self, url: str, *, check: bool = True) -> Target:
        """Split `url`; with `check`, refuse what the policy forbids before any connection."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ForbiddenHost(f"malformed URL {url[:200]!r}: {exc}", error="ForbiddenHost") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ForbiddenHost(f"scheme {scheme!r} is not http(s): {url[:200]!r}", error="ForbiddenHost")
        if not parts.hostname:
            raise ForbiddenHost(f"no host in {url[:200]!r}", error="ForbiddenHost")
        if parts.username is not None or parts.password is not None:
            raise ForbiddenHost("credentials in URLs are not accepted", error="ForbiddenHost")
        host = _ascii_host(parts.hostname)
        path = parts.path or "/"
        query = f"?{parts.query}" if parts.query else ""
        target = Target(scheme, host, port or DEFAULT_PORTS[scheme], path + query)
        if check:
            self._check_literal(target.host, target.port)
        return target

    def _check_literal(self, host: str, port: int) -> None:
        """A literal IP host is judged at once, without connecting."""
        if self.trusts(host, port):
            return
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: judged after resolution, in GuardedBackend
        if not address_allowed(ip):
            raise ForbiddenHost(f"{host} is not a public address", error="ForbiddenHost")

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address of `host`; ForbiddenHost if any of them is not public."""
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if not address_allowed(ipaddress.ip_address(address.partition("%")[0])):
                raise ForbiddenHost(f"{host} resolves to {address}: not public", error="ForbiddenHost")
        return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend, connecting only to addresses the policy has checked."""

    def __init__(self, policy: NetPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    # httpcore calls these with (host, port, timeout, local_address, socket_options): passed through.
    async def connect_tcp(
        self, host: str, port: int, *args: Any, **options: Any
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._connect(host, port, *args, **options))

    async def _connect(self, host: str, port: int, *args: Any, **options: Any) -> httpcore.AsyncNetworkStream:
        if self._policy.trusts(host, port):
            return await self._inner.connect_tcp(host, port, *args, **options)
        try:  # bounded by the deadline of the call this connection is for
            addresses = await self._policy.resolve(host, port)
        except OSError as exc:  # socket.gaierror: no such host
            raise httpcore.ConnectError(f"resolving {host}: {exc}") from None
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, *args, **options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(self, path: str, *args: Any, **options: Any) -> httpcore.AsyncNetworkStream:
        raise ForbiddenHost("unix sockets are not used", error="ForbiddenHost")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's anyio stream with its socket looked up once.

    Before each request and after each response, the pool asks every connection of the host
    whether its socket is readable (closed by the peer); httpcore's stream finds the socket
    through anyio's typed attributes, which build their table anew at every question (most of the
    ~5 µs each, 2 x the connections per request). The answer is the same poll as httpcore's.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream, sock: socket.socket | None = None) -> None:
        self._inner = inner
        self._sock: socket.socket | None = sock if sock is not None else inner.get_extra_info("socket")

    # httpcore passes its timeout along (positionally or by name): passed through.
    async def read(self, max_bytes: int, *args: Any, **options: Any) -> bytes:
        return await self._inner.read(max_bytes, *args, **options)

    async def write(self, buffer: bytes, *args: Any, **options: Any) -> None:
        await self._inner.write(buffer, *args, **options)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, *args: Any, **options: Any
    ) -> httpcore.AsyncNetworkStream:
        # TLS runs over the same socket: its readability is still the question.
        return _Stream(await self._inner.start_tls(ssl_context, *args, **options), self._sock)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._sock)
        if info == "socket":
            return self._sock
        return self._inner.get_extra_info(info)


def _readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once (data, or the end); a closed socket counts as readable."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
