"""Following a websocket event stream into a Redis stream, batch by batch, cursor with the data.

A reader task moves frames from the websocket into a small bounded buffer; the batcher converts
them and flushes a batch (XADDs + cursor in one MULTI) when it is full or `batch_timeout_ms` old.
While the producer blocks at the high-water mark the buffer fills, the reader stops reading and
TCP pushes back on the relay: memory stays bounded however long the block lasts, and nothing is
dropped (rsky dropped batches over the mark). A disconnect flushes what was read, then
reconnects from the cursor with backoff.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from atp import AtpError
from atp.subscribe import subscribe
from streams import Backoff, Producer
from streams._producer import Fields

log = logging.getLogger("streamfill.ingester.stream")


@dataclass
class Converted:
    """What one frame becomes: entries for the target stream, entries for other streams, its seq."""

    entries: list[Fields] = field(default_factory=list)
    extra: list[tuple[str, Fields]] = field(default_factory=list)
    seq: int | None = None


class SourceUnavailable(Exception):
    """A frame cannot be converted *now* (e.g. the PLC directory is down): not the frame's fault.

    The source writes what it converted before that frame, leaves the cursor just before it, and
    reconnects with backoff; the frame is read again, never dead-lettered for an outage.
    """


class FrameConverter(Protocol):
    """Turns one raw frame into entries (firehose and labeler modes each have one)."""

    async def convert(self, frame: bytes) -> Converted: ...


@dataclass
class _Batch:
    entries: list[Fields] = field(default_factory=list)
    extra: list[tuple[str, Fields]] = field(default_factory=list)
    seq: int | None = None
    started: float = 0.0

    def add(self, item: Converted) -> None:
        if not self:
            self.started = time.monotonic()
        self.entries += item.entries
        self.extra += item.extra
        if item.seq is not None:
            self.seq = item.seq

    def __len__(self) -> int:
        return len(self.entries) + len(self.extra)

    def __bool__(self) -> bool:  # a frame with no entries still moves the cursor
        return bool(self.entries or self.extra or self.seq is not None)


class EventStreamSource:
    """Follows `url`, resuming from the cursor stored at `cursor_key`; a runtime Component."""

    def __init__(
        self,
        redis: aioredis.Redis,
        url: str,
        cursor_key: str,
        producer: Producer,
        converter: FrameConverter,
        *,
        batch_size: int,
        batch_timeout_ms: int,
        name: str,
        initial_cursor: int | None = None,
    ) -> None:
        self._redis = redis
        self._url = url
        self._cursor_key = cursor_key
        self._producer = producer
        self._converter = converter
        self._batch_size = batch_size
        self._initial_cursor = initial_cursor
        self._timeout_s = batch_timeout_ms / 1000
        self.name = name
        self._backoff = Backoff(base_s=0.2, cap_s=30.0)
        self._stop = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self.frames = 0
        self.reconnects = 0
        self.last_seq: int | None = None

    def stop(self) -> None:
        """Leave at once: unflushed frames are simply read again, since the cursor never passed them."""
        self._stop.set()
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        failures = 0
        while not self._stop.is_set():
            cursor = await self._redis.get(self._cursor_key)
            read, error = await self._follow(int(cursor) if cursor else self._initial_cursor)
            if error is not None:
                log.warning("event stream disconnected", extra={"source": self.name, "error": str(error)})
            # A connection that delivered frames resets the backoff; one that delivered none grows it.
            failures = 0 if read else failures + 1
            if not self._stop.is_set():
                self.reconnects += 1
                with anyio.move_on_after(self._backoff.delay(failures) if failures else 0.05):
                    await self._stop.wait()

    async def _follow(self, cursor: int | None) -> tuple[int, AtpError | None]:
        """One connection: how many frames it delivered, and the error that ended it."""
        send, receive = anyio.create_memory_object_stream[bytes](self._batch_size)
        read = 0
        error: AtpError | None = None

        async def reader() -> None:
            nonlocal read, error
            async with send:
                try:
                    async for frame in subscribe(self._url, cursor=cursor):
                        await send.send(frame)
                        read += 1
                except AtpError as exc:
                    error = exc

        with anyio.CancelScope() as self._scope:
            if self._stop.is_set():
                self._scope.cancel()
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                try:
                    await self._batch_loop(receive)
                except SourceUnavailable as exc:
                    log.warning("cannot convert frames now", extra={"source": self.name, "error": str(exc)})
                    read, error = 0, None  # count as a failed connection: the backoff grows
                tg.cancel_scope.cancel()  # the batcher is done: leave the websocket
        self._scope = None
        return read, error

    async def _batch_loop(self, receive: MemoryObjectReceiveStream[bytes]) -> None:
        batch, ended = _Batch(), False
        async with receive:
            while not self._stop.is_set() and not ended:
                try:
                    frame = await self._next(receive, batch)
                except anyio.EndOfStream:
                    frame, ended = None, True
                if frame is not None:
                    try:
                        converted = await self._converter.convert(frame)
                    except SourceUnavailable:
                        await self._flush(batch)  # what came before the frame is written
                        raise
                    batch.add(converted)
                    self.frames += 1
                if batch and (ended or len(batch) >= self._batch_size or self._expired(batch)):
                    await self._flush(batch)
                    batch = _Batch()

    async def _next(self, receive: MemoryObjectReceiveStream[bytes], batch: _Batch) -> bytes | None:
        """The next frame, or None when the open batch's time is up (EndOfStream when it ended)."""
        wait = self._timeout_s - (time.monotonic() - batch.started) if batch else self._timeout_s
        with anyio.move_on_after(max(0.0, wait)):
            return await receive.receive()
        return None

    def _expired(self, batch: _Batch) -> bool:
        return time.monotonic() - batch.started >= self._timeout_s

    async def _flush(self, batch: _Batch) -> None:
        if not batch:
            return
        cursor = (self._cursor_key, str(batch.seq)) if batch.seq is not None else None
        await self._producer.send(batch.entries, cursor=cursor, extra=batch.extra)
        if batch.seq is not None:
            self.last_seq = batch.seq
