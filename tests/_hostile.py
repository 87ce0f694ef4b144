"""A hostile HTTP peer on loopback: answers that bomb, drip, loop, flood and redirect where they
should not. Tests script it path by path (and DID by DID); `hits` counts what was asked.

    async with HostileServer() as evil:
        evil.on("/xrpc/com.atproto.sync.getRepo", bomb(layers=2), did=did)
        evil.url("/xrpc/...")
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import struct
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from atp.car import write_car
from atp.crypto import SigningKey

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]

GET_REPO = "/xrpc/com.atproto.sync.getRepo"
LIST_REPOS = "/xrpc/com.atproto.sync.listRepos"
GET_REPO_STATUS = "/xrpc/com.atproto.sync.getRepoStatus"
GIB = 1 << 30


class HostileServer:
    """An aiohttp server whose every answer is chosen by the test."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.base = ""
        self.hits: Counter[str] = Counter()
        self._routes: dict[tuple[str, str | None], Behaviour] = {}
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> HostileServer:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._dispatch)
        # Hanging and dripping answers must not hold the shutdown of the test.
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://{self.host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "") -> str:
        return f"{self.base}{path}"

    def on(self, path: str, behaviour: Behaviour, *, did: str | None = None) -> None:
        """Answer GET `path` (for `did` only, when given) with `behaviour`."""
        self._routes[(path, did)] = behaviour

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        did = request.query.get("did")
        self.hits[request.path] += 1
        if did:
            self.hits[f"{request.path}?did={did}"] += 1
        behaviour = self._routes.get((request.path, did)) or self._routes.get((request.path, None))
        if behaviour is None:
            return web.json_response({"error": "NotFound", "message": request.path}, status=404)
        return await behaviour(request)


def json_answer(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Behaviour:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(doc, status=status, headers=headers)

    return answer


def raw_answer(body: bytes, headers: dict[str, str], status: int = 200) -> Behaviour:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers=headers, status=status)

    return answer


@functools.cache
def gzip_repeat(prefix: bytes, unit: bytes, count: int, layers: int = 1) -> bytes:
    """`prefix` then `count` x `unit`, under `layers` of gzip (a bomb when `unit` compresses well).

    The inner layer repeats one deflate block: after a full flush the deflater emits the same
    bytes for the same input, so building 4 GiB of content costs milliseconds, not the seconds
    compressing it would. The CRC is not computed: a client must give up long before the trailer.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(unit) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = head + block * count + deflate.flush()
    size = (len(prefix) + len(unit) * count) & 0xFFFFFFFF
    data = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + body + struct.pack("<II", 0, size)
    for _ in range(layers - 1):
        wrap = zlib.compressobj(9, zlib.DEFLATED, 31)
        data = wrap.compress(data) + wrap.flush()
    return data


def zeros_bomb(layers: int, decoded: int = 4 * GIB) -> bytes:
    """`decoded` zero bytes under `layers` of gzip: two layers of 4 GiB are ~10 KB on the wire."""
    return gzip_repeat(b"", b"\0" * (1 << 20), decoded >> 20, layers)


def car_bomb(decoded: int = 4 * GIB) -> bytes:
    """A gzip'd CAR that stays valid as far as anyone reads: one 1 MiB raw block, over and over."""
    block = b"\0" * ((1 << 20) - 40)
    cid = b"\x01\x55\x12\x20" + hashlib.sha256(block).digest()
    header = write_car([cid], [])
    unit = write_car([cid], [(cid, block)])[len(header) :]
    return gzip_repeat(header, unit, decoded // len(unit))


def bomb(body: bytes, layers: int, content_type: str = "application/vnd.ipld.car") -> Behaviour:
    """`body` labelled `Content-Encoding: gzip` once per layer (`gzip, gzip`)."""
    coding = ", ".join(["gzip"] * layers)
    return raw_answer(body, {"Content-Encoding": coding, "Content-Type": content_type})


def drip(body: bytes, interval_s: float = 1.0, headers: dict[str, str] | None = None) -> Behaviour:
    """Headers at once, then the body one byte per `interval_s` (a slowloris in reverse)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers or {"Content-Type": "application/json"})
        await response.prepare(request)
        for i in range(len(body)):
            await response.write(body[i : i + 1])
            await asyncio.sleep(interval_s)
        await response.write_eof()
        return response

    return answer


def flood(chunk: bytes, total: int, headers: dict[str, str] | None = None) -> Behaviour:
    """`total` bytes (chunked, no Content-Length) as fast as the client takes them."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers or {"Content-Type": "application/json"})
        await response.prepare(request)
        sent = 0
        while sent < total:
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
        return response

    return answer


def paced(body: bytes, *, chunk: int, interval_s: float) -> Behaviour:
    """`body` in `chunk`-byte writes, one every `interval_s`: a slow but steady download."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.ipld.car"})
        await response.prepare(request)
        for offset in range(0, len(body), chunk):
            await response.write(body[offset : offset + chunk])
            await asyncio.sleep(interval_s)
        await response.write_eof()
        return response

    return answer


def redirect(location: str | Callable[[web.Request], str], status: int = 302) -> Behaviour:
    async def answer(request: web.Request) -> web.StreamResponse:
        target = location if isinstance(location, str) else location(request)
        return web.Response(status=status, headers={"Location": target})

    return answer


def redirect_loop() -> Behaviour:
    """Every answer redirects to the same path with a new query: a loop without end."""

    async def answer(request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "0")) + 1
        query = "&".join(f"{k}={v}" for k, v in request.query.items() if k != "n")
        return web.Response(status=302, headers={"Location": f"{request.path}?{query}&n={n}"})

    return answer


def did_document(did: str, pds_endpoint: str, key: SigningKey) -> dict[str, Any]:
    """A DID document naming `pds_endpoint` as the PDS and `key` as the #atproto key."""
    return {
        "id": did,
        "alsoKnownAs": [],
        "verificationMethod": [
            {
                "id": f"{did}#atproto",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": key.public_key.multibase(),
            }
        ],
        "service": [
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds_endpoint}
        ],
    }
