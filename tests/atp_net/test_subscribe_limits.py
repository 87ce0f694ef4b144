"""atp.subscribe against hostile event-stream servers on loopback: a frame dripped byte by byte,
an oversized frame, a handshake that redirects elsewhere."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest

from atp.errors import UpstreamError
from atp.subscribe import subscribe
from tests._hostile import HostileServer, json_answer, redirect

pytestmark = pytest.mark.anyio

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_ws_server(session: Session) -> AsyncIterator[str]:
    """A websocket server written by hand, so that it can misbehave below the frame level."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            ln.split(b":", 1)[1].strip()
            for ln in head.split(b"\r\n")
            if ln.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        try:
            await session(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/xrpc/com.atproto.sync.subscribeRepos"
    finally:
        server.close()


async def _read_all(url: str, **limits: Any) -> None:
    """Read the stream until it fails (it never ends by itself)."""
    async with aclosing(subscribe(url, cursor=None, **limits)) as stream:
        async for _ in stream:
            pass


async def test_a_dripped_frame_is_dropped_by_the_ping_timeout() -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x82\x7e\x03\xe8")  # a binary frame of 1,000 bytes...
        for _ in range(1000):  # ...one byte at a time, never answering a ping
            writer.write(b"\0")
            await writer.drain()
            await asyncio.sleep(0.1)

    async with raw_ws_server(drip) as url:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as info:
            await _read_all(url, ping_interval_s=0.3, ping_timeout_s=0.3)
    assert info.value.error == "StreamClosed" and "by us (1011" in str(info.value)  # ping timeout
    assert time.monotonic() - started < 5  # not the 100 s the frame would take


async def test_an_oversized_frame_closes_the_stream() -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x82\x7f" + (64 * 1024 * 1024).to_bytes(8, "big"))  # announces 64 MiB
        await writer.drain()
        await reader.read()  # until the client hangs up

    async with raw_ws_server(huge) as url:
        with pytest.raises(UpstreamError) as info:
            await _read_all(url, max_frame_bytes=1024 * 1024, ping_interval_s=0.5, ping_timeout_s=0.5)
    assert info.value.error == "FrameTooBig" and "by us (1009" in str(info.value)  # message too big


async def test_a_handshake_redirect_is_not_followed() -> None:
    async with HostileServer() as relay, HostileServer() as elsewhere:
        elsewhere.on("/xrpc/com.atproto.sync.subscribeRepos", json_answer({}))
        relay.on(
            "/xrpc/com.atproto.sync.subscribeRepos",
            redirect(elsewhere.url("/xrpc/com.atproto.sync.subscribeRepos")),
        )
        with pytest.raises(UpstreamError) as info:
            await _read_all(relay.url("").replace("http", "ws"))
    assert info.value.error == "StreamRejected" and info.value.status == 302
    assert elsewhere.hits["/xrpc/com.atproto.sync.subscribeRepos"] == 0
