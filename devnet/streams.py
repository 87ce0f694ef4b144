"""Websocket event-stream server shared by the relay firehose and the labeler.

Protocol, as the reference servers do it: no cursor -> live only; cursor in the retained log ->
replay after it, then live; cursor older than the log -> `#info OutdatedCursor`, then replay from the
oldest retained frame; cursor in the future -> `FutureCursor` error frame and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from aiohttp import WSCloseCode, WSMsgType, web

from atp.frames import ErrorFrame, InfoFrame, encode_frame
from devnet.eventlog import EventLog
from devnet.faults import Faults

__all__ = ["close_streams_on_shutdown", "serve_stream"]

_OPEN = web.AppKey("devnet_streams", weakref.WeakSet[web.WebSocketResponse])

_OUTDATED = "Requested cursor exceeded limit. Possibly missing events"


def _parse_cursor(request: web.Request) -> int | None:
    raw = request.query.get("cursor")
    if raw is None or raw == "":
        return None
    if not raw.lstrip("-").isdigit():
        raise web.HTTPBadRequest(
            text='{"error": "InvalidRequest", "message": "cursor must be an integer"}',
            content_type="application/json",
        )
    return int(raw)


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) client messages so that a client close is noticed while we are idle."""
    async for message in ws:
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            return


async def _start(ws: web.WebSocketResponse, log: EventLog, cursor: int | None) -> int | None:
    """Send the opening info/error frame if any; return the position to stream after (None = close)."""
    if cursor is None:
        return log.last_seq
    if cursor > log.last_seq:
        await ws.send_bytes(encode_frame(ErrorFrame("FutureCursor", "Cursor in the future.")))
        return None
    if cursor < log.oldest_seq - 1:
        await ws.send_bytes(encode_frame(InfoFrame("OutdatedCursor", _OUTDATED)))
        return log.oldest_seq - 1
    return cursor


async def _drop(ws: web.WebSocketResponse, request: web.Request) -> None:
    """Cut the connection without a close handshake, like a relay restart or a network blip."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    else:
        await ws.close(code=WSCloseCode.INTERNAL_ERROR)


async def _wait_or_closed(log: EventLog, position: int, closed: asyncio.Task[None]) -> bool:
    """Wait for a frame after `position`; False if the client went away first."""
    waiter = asyncio.ensure_future(log.wait_beyond(position))
    try:
        done, _ = await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    return closed not in done


async def _pump(
    ws: web.WebSocketResponse,
    request: web.Request,
    log: EventLog,
    faults: Faults,
    position: int,
    closed: asyncio.Task[None],
) -> None:
    sent, epoch = 0, log.epoch
    while not ws.closed:
        if log.epoch != epoch:  # the sequence was reset: subscribers start over
            await ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"sequence reset")
            return
        batch = log.after(position)
        if not batch:
            if not await _wait_or_closed(log, position, closed):
                return
            continue
        for seq, frame in batch:
            await ws.send_bytes(frame)
            position = seq
            sent += 1
            if faults.drop_ws_every and sent >= faults.drop_ws_every:
                faults.note("ws_drop")
                await _drop(ws, request)
                return


def close_streams_on_shutdown(app: web.Application) -> None:
    """Close open subscriptions when the server stops, instead of waiting out the shutdown timeout."""
    app[_OPEN] = weakref.WeakSet[web.WebSocketResponse]()

    async def close_all(app: web.Application) -> None:
        open_streams: weakref.WeakSet[web.WebSocketResponse] = app[_OPEN]
        for ws in list(open_streams):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"devnet shutting down")

    app.on_shutdown.append(close_all)


async def serve_stream(request: web.Request, log: EventLog, faults: Faults) -> web.StreamResponse:
    """Serve one subscriber of `log` until it leaves, is dropped, or the server stops."""
    cursor = _parse_cursor(request)
    ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    position = await _start(ws, log, cursor)
    if position is None:
        await ws.close()
        return ws
    closed = asyncio.ensure_future(_until_closed(ws))
    if _OPEN in request.app:
        request.app[_OPEN].add(ws)
    log.subscribers += 1
    try:
        # A subscriber that vanishes mid-send needs no clean-up beyond the reader (below).
        with contextlib.suppress(ConnectionError):
            await _pump(ws, request, log, faults, position, closed)
    finally:
        log.subscribers -= 1
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closed
    return ws
