"""Bounded HTTP GETs to peers we do not control: deadlines, body caps, content codings, redirects.

Every call through `HttpClient` has

- an overall **deadline** (a `Deadline`; anyio cancel scopes around the request and around each
  body read) besides the per-read, connect and pool timeouts of the connection pool. A
  `Deadline` may grant `per_byte_s` more per decoded byte, so a large body that keeps flowing is
  not cut off while a drip (1 byte/s) still ends at the base deadline;
- a **cap on decoded body bytes**, chosen per endpoint by the caller: bytes are counted after
  decoding, in pieces of at most 256 KiB, so nothing larger is ever held;
- **content codings decoded here, streamed**: we ask for gzip and accept no coding, `identity`,
  or exactly one gzip layer. Anything else — nested codings (`gzip, gzip`), deflate, br, zstd —
  is refused (`ResponseRejected`) before a byte of the body is decoded;
- **redirects followed by hand**: at most `NetPolicy.max_redirects`, every hop checked by the
  policy again (scheme, literal addresses, and the resolved addresses when connecting).

One connection pool per origin (scheme, host, port): a request never scans other hosts'
connections, and an origin's pool is closed once idle for `keepalive_s`.

Failures are `atp.errors`: `UpstreamError` (error `Timeout`, `ConnectionError`, `ProtocolError`,
`TruncatedBody`: transient), `ResponseRejected` (cap, coding, redirects: permanent),
`ForbiddenHost` (the policy: permanent).
"""

from __future__ import annotations

import functools
import ssl
import zlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode, urljoin

import anyio
import httpcore

from atp.errors import ForbiddenHost, ResponseRejected, UpstreamError, XrpcError
from atp.netpolicy import GuardedBackend, NetPolicy, Target

__all__ = ["Deadline", "HttpClient", "Reply"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Decoded bytes produced per zlib call: what one step of decoding can ever allocate.
_PIECE = 256 * 1024
_GZIP = frozenset({"gzip", "x-gzip"})


@dataclass(frozen=True, slots=True)
class Deadline:
    """A call ends by `at` (anyio clock), plus `per_byte_s` for every decoded byte received."""

    at: float
    per_byte_s: float = 0.0

    @classmethod
    def after(cls, seconds: float, *, min_bytes_per_s: float = 0.0) -> Deadline:
        per_byte = 1.0 / min_bytes_per_s if min_bytes_per_s > 0 else 0.0
        return cls(anyio.current_time() + seconds, per_byte)

    def remaining(self, received: int = 0) -> float:
        return self.at + received * self.per_byte_s - anyio.current_time()


@contextmanager
def _translated(url: str) -> Iterator[None]:
    """httpcore and deadline failures as `UpstreamError` (transient)."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamError(f"{url}: deadline exceeded", error="Timeout") from exc
    except httpcore.TimeoutException as exc:
        raise UpstreamError(f"{url}: {type(exc).__name__}", error="Timeout") from exc
    except httpcore.UnsupportedProtocol as exc:
        raise ForbiddenHost(f"{url}: {exc}", error="ForbiddenHost") from exc
    except httpcore.ProtocolError as exc:
        raise UpstreamError(f"{url}: {type(exc).__name__}: {exc}", error="ProtocolError") from exc
    except (httpcore.NetworkError, OSError) as exc:
        raise UpstreamError(f"{url}: {type(exc).__name__}: {exc}", error="ConnectionError") from exc


class _Gunzip:
    """One gzip layer, decoded in bounded pieces (members may follow each other)."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        z = self._z
        while True:
            try:
                piece = z.decompress(data, _PIECE)
            except zlib.error as exc:
                raise ResponseRejected(f"invalid gzip body: {exc}", error="BadContentEncoding") from None
            if piece:
                yield piece
            data = z.unconsumed_tail
            if z.eof and z.unused_data:  # another member follows
                data = z.unused_data
                self._z = z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                continue
            if not data and len(piece) < _PIECE:
                return  # input used up and nothing left inside zlib

    def finish(self) -> None:
        if not self._z.eof:
            raise UpstreamError("gzip body ended early", error="TruncatedBody")


class _Identity:
    def feed(self, data: bytes) -> Iterator[bytes]:
        yield data

    def finish(self) -> None:
        return None


def _decoder(headers: dict[str, str], status: int) -> _Gunzip | _Identity:
    """The decoder for the response's Content-Encoding; refuse what we did not ask for."""
    codings = [c.strip().lower() for c in headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return _Identity()
    if len(codings) == 1 and codings[0] in _GZIP:
        return _Gunzip()
    raise ResponseRejected(
        f"content coding {headers['content-encoding']!r} refused (only one gzip layer is accepted)",
        status=status,
        error="BadContentEncoding",
    )


class Reply:
    """A response after redirects: status, headers (lowercase names), and its body on demand."""

    def __init__(self, response: httpcore.Response, url: str) -> None:
        self.status = response.status
        self.url = url
        self.headers: dict[str, str] = {}
        for name, value in response.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            # Repeated fields are one list (RFC 9110 5.3): `gzip` twice is a nested coding too.
            self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text
        self._response = response

    async def chunks(
        self, max_bytes: int, deadline: Deadline | None, *, too_large: type[XrpcError] = ResponseRejected
    ) -> AsyncGenerator[bytes, None]:
        """Decoded body pieces; `too_large` once more than `max_bytes` were decoded.

        `deadline` is checked around every read; None leaves it to the caller, who must then hold
        a cancel scope around the whole iteration (`read` does: one scope instead of one a read).
        """
        decoder = _decoder(self.headers, self.status)
        declared = self.headers.get("content-length", "")
        if isinstance(decoder, _Identity) and declared.isdigit() and int(declared) > max_bytes:
            raise too_large(f"{declared} bytes > cap {max_bytes}", status=self.status, error="BodyTooLarge")
        stream = aiter(cast(AsyncIterable[bytes], self._response.stream))
        received = 0
        try:
            while True:
                with _translated(self.url):
                    try:
                        if deadline is None:
                            data = await anext(stream)
                        else:
                            remaining = deadline.remaining(received)
                            if remaining <= 0:
                                raise TimeoutError
                            # The cancel scope wraps one read only, never a yield to the caller.
                            with anyio.fail_after(remaining):
                                data = await anext(stream)
                    except StopAsyncIteration:
                        break
                for piece in decoder.feed(data):
                    received += len(piece)
                    if received > max_bytes:
                        raise too_large(
                            f"body exceeds cap {max_bytes} bytes", status=self.status, error="BodyTooLarge"
                        )
                    yield piece
            decoder.finish()
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def read(self, max_bytes: int, deadline: Deadline) -> bytes:
        """The whole decoded body, at most `max_bytes` (ResponseRejected beyond)."""
        with _translated(self.url), anyio.fail_after(max(0.0, deadline.remaining())):
            return b"".join([piece async for piece in self.chunks(max_bytes, None)])

    async def read_error_body(self, limit: int, deadline: Deadline) -> bytes:
        """At most `limit` bytes of an error body; a body we cannot decode is just empty."""
        out = bytearray()
        try:
            with _translated(self.url), anyio.fail_after(max(0.0, deadline.remaining())):
                async with aclosing(self.chunks(1 << 62, None)) as pieces:
                    async for piece in pieces:
                        out += piece
                        if len(out) >= limit:
                            break
        except (ResponseRejected, UpstreamError):
            return b""
        return bytes(out[:limit])


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One context per process: loading the CA bundle costs ~40 ms, and a context is shareable."""
    return httpcore.default_ssl_context()


@dataclass(slots=True)
class _Pool:
    pool: httpcore.AsyncConnectionPool
    in_flight: int = 0
    last_used: float = 0.0


class HttpClient:
    """GET-only HTTP client for untrusted peers (see the module docstring); use `async with`."""

    def __init__(
        self,
        policy: NetPolicy | None = None,
        *,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 30.0,
        connections_per_host: int = 16,
        keepalive_s: float = 30.0,
        user_agent: str = "streamfill",
    ) -> None:
        self.policy = policy or NetPolicy()
        self._backend = GuardedBackend(self.policy)
        self._per_host = connections_per_host
        self._keepalive_s = keepalive_s
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._pruned_at = 0.0
        self._timeouts = {
            "connect": connect_timeout_s,
            "read": read_timeout_s,
            "write": read_timeout_s,
            "pool": read_timeout_s,
        }
        self._user_agent = user_agent.encode()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection."""
        pools, self._pools = self._pools, {}
        for entry in pools.values():
            await entry.pool.aclose()

    def statistics(self) -> dict[str, int]:
        return {
            "pools": len(self._pools),
            "connections": sum(len(p.pool.connections) for p in self._pools.values()),
            "in_flight": sum(p.in_flight for p in self._pools.values()),
        }

    async def get(
        self, url: str, params: dict[str, Any] | None = None, *, max_bytes: int, deadline: Deadline
    ) -> tuple[Reply, bytes]:
        """GET `url`: the final reply and its body (an error status' body truncated to `max_bytes`)."""
        async with self.open(url, params, deadline=deadline) as reply:
            if reply.status >= 300:
                return reply, await reply.read_error_body(max_bytes, deadline)
            return reply, await reply.read(max_bytes, deadline)

    @asynccontextmanager
    async def open(
        self, url: str, params: dict[str, Any] | None = None, *, deadline: Deadline
    ) -> AsyncIterator[Reply]:
        """GET `url`, following redirects; the reply's body is read inside the block."""
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        target = self.policy.parse(url)
        for _ in range(self.policy.max_redirects + 1):
            reply = await self._send(target, deadline)
            location = reply.headers.get("location") if reply.status in _REDIRECTS else None
            if location is None:
                break
            await self._close(reply, target)
            target = self.policy.parse(urljoin(target.url(), location))
        else:
            raise ResponseRejected(
                f"{url}: more than {self.policy.max_redirects} redirects",
                status=reply.status,
                error="TooManyRedirects",
            )
        try:
            yield reply
        finally:
            await self._close(reply, target)

    async def _send(self, target: Target, deadline: Deadline) -> Reply:
        entry = await self._pool(target)
        host = f"[{target.host}]" if ":" in target.host else target.host
        if target.port != (443 if target.scheme == "https" else 80):
            host = f"{host}:{target.port}"
        request = httpcore.Request(
            b"GET",
            httpcore.URL(
                scheme=target.scheme.encode(),
                host=target.host.encode(),
                port=target.port,
                target=target.target.encode(),
            ),
            headers=[
                (b"Host", host.encode()),
                (b"User-Agent", self._user_agent),
                (b"Accept-Encoding", b"gzip"),
            ],
            extensions={"timeout": self._timeouts},
        )
        url = target.url()
        entry.in_flight += 1
        try:
            with _translated(url), anyio.fail_after(max(0.0, deadline.remaining())):
                response = await entry.pool.handle_async_request(request)
        except BaseException:
            entry.in_flight -= 1
            raise
        return Reply(response, url)

    async def _close(self, reply: Reply, target: Target) -> None:
        with anyio.CancelScope(shield=True):
            await reply._response.aclose()
        entry = self._pools.get(target.origin)
        if entry is not None:
            entry.in_flight -= 1
            entry.last_used = anyio.current_time()

    async def _pool(self, target: Target) -> _Pool:
        now = anyio.current_time()
        if now - self._pruned_at > self._keepalive_s:
            await self._prune(now)
        entry = self._pools.get(target.origin)
        if entry is None:
            pool = httpcore.AsyncConnectionPool(
                ssl_context=_ssl_context(),
                max_connections=self._per_host,
                keepalive_expiry=self._keepalive_s,
                network_backend=self._backend,
            )
            entry = self._pools[target.origin] = _Pool(pool, last_used=now)
        return entry

    async def _prune(self, now: float) -> None:
        """Close the pools of origins idle for longer than keepalive (nothing in flight)."""
        self._pruned_at = now
        keep = self._keepalive_s
        idle = [k for k, e in self._pools.items() if not e.in_flight and now - e.last_used > keep]
        for origin in idle:
            entry = self._pools.pop(origin)
            with anyio.CancelScope(shield=True):
                await entry.pool.aclose()
