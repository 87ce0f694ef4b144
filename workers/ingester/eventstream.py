"""Following a websocket event stream into a Redis stream, batch by batch, cursor with the data.

A reader task moves frames from the websocket into a small bounded buffer; the batcher converts
them and flushes a batch (XADDs + cursor in one MULTI) when it is full or `batch_timeout_ms` old.
While the producer blocks at the high-water mark the buffer fills, the reader stops reading and
TCP pushes back on the relay: memory stays bounded however long the block lasts, and nothing is
dropped (rsky dropped batches over the mark). A disconnect flushes what was read, then
reconnects from the cursor with backoff; the backoff resets only after a connection moved the
cursor, so a source that closes at once (or sends nothing usable) is not hammered.

The cursor moves by plausible steps only (`workers.ingester.seqguard`): a stale or implausibly
far seq is dead-lettered and never becomes the cursor; `FutureCursor` or a sequence reset resume
from the source's head with a gap recorded (`Keys.gaps`); a frame over the size limit is
dead-lettered with its seq (the one after the cursor) and skipped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from atp import AtpError
from atp.subscribe import DEFAULT_MAX_FRAME_BYTES, subscribe
from streams import Backoff, Fields, Outlet, Producer, RunnerConfig, SourceBatch, SourceError, SourceRunner
from workers.ingester.seqguard import FUTURE_CURSOR, OUTDATED_CURSOR, SeqGuard, dead_frame_fields

log = logging.getLogger("streamfill.ingester.stream")


@dataclass
class Converted:
    """What one frame becomes: entries for the target stream, entries for other streams, its seq.

    `control` is a signal for the follower itself (`seqguard.FUTURE_CURSOR`, `OUTDATED_CURSOR`).
    """

    entries: Sequence[Fields] = field(default_factory=list)
    extra: list[tuple[str, Fields]] = field(default_factory=list)
    seq: int | None = None
    control: str | None = None


class SourceUnavailable(Exception):
    """A frame cannot be converted *now* (e.g. the PLC directory is down): not the frame's fault.

    The source writes what it converted before that frame, leaves the cursor just before it, and
    reconnects with backoff; the frame is read again, never dead-lettered for an outage.
    """


class _ResumeAtHead(Exception):
    """The source no longer knows our cursor: reconnect without one, recording the gap."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StreamTargets:
    """Where a follower writes besides its stream: its DLQ and its gaps ledger (`Keys`)."""

    host: str
    dlq: str
    gaps: str
    max_seq_step: int = 10_000_000
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES


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
    """Follows `url`, resuming from the cursor stored at `cursor_key`; a `streams.Source`.

    Each runner session is one connection; it always ends in a `SourceError` (a disconnect), so
    the runner's backoff paces the reconnects and resets only after a connection moved the cursor.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        url: str,
        cursor_key: str,
        producer: Producer,
        converter: FrameConverter,
        targets: StreamTargets,
        *,
        batch_size: int,
        batch_timeout_ms: int,
        name: str,
        initial_cursor: int | None = None,
    ) -> None:
        self._url = url
        self._converter = converter
        self._targets = targets
        self._guard = SeqGuard(targets.max_seq_step)
        self._batch_size = batch_size
        self._initial_cursor = initial_cursor
        self._timeout_s = batch_timeout_ms / 1000
        self.name = name
        policy = RunnerConfig(cursor_key=cursor_key, backoff=Backoff(base_s=0.2, cap_s=30.0))
        self.runner = SourceRunner(redis, self, producer, policy)
        self._out: Outlet = self.runner
        self._scope: anyio.CancelScope | None = None
        self._at_head: str | None = None  # why the next connection goes without a cursor
        self._stalled = False  # the connection ended at a frame that cannot be converted now
        self._error: AtpError | None = None  # what ended the current connection
        self.frames = 0
        self.reconnects = 0
        self.refused = 0  # frames dead-lettered by the seq guard or for their size
        self.gaps = 0
        self.last_seq: int | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.runner.run(task_status=task_status)

    def stop(self) -> None:
        """Leave at once: unflushed frames are simply read again, since the cursor never passed them."""
        self.runner.stop()

    def interrupt(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def session(self, cursor: str | None, out: Outlet) -> float | None:
        """One connection from the stored cursor (or from the head, after the source lost it)."""
        self._out = out
        stored = int(cursor) if cursor else None
        if self._at_head is not None:
            self._guard.start(None)
            self._guard.expect_gap(self._at_head, stored)
            self._at_head = await self._follow(None)
        else:
            self._guard.start(stored)
            self._at_head = await self._follow(stored if stored is not None else self._initial_cursor)
        if out.stopped:
            return None
        self.reconnects += 1
        # A frame that cannot be converted now is met again at once: that connection counts as
        # failed even when it moved the cursor before the frame, so the reconnects back off.
        raise SourceError(f"{self.name}: connection ended", disconnect=not self._stalled)

    async def _follow(self, cursor: int | None) -> str | None:
        """One connection; returns why the next one must start at the head (None: from the cursor)."""
        send, receive = anyio.create_memory_object_stream[bytes](self._batch_size)
        self._error, self._stalled = None, False
        at_head: str | None = None
        with anyio.CancelScope() as self._scope:
            if self._out.stopped:
                self._scope.cancel()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, send, cursor)
                try:
                    await self._batch_loop(receive)
                except SourceUnavailable as exc:
                    log.warning("cannot convert frames now", extra={"source": self.name, "error": str(exc)})
                    self._error, self._stalled = None, True
                except _ResumeAtHead as exc:
                    at_head, self._error = exc.reason, None
                    log.error(
                        "source lost our cursor: resuming from its head, gap recorded",
                        extra={"source": self.name, "reason": exc.reason, "cursor": self._guard.position},
                    )
                tg.cancel_scope.cancel()  # the batcher is done: leave the websocket
        self._scope = None
        await self._ended(self._error)
        if at_head is None and self._guard.position is None:
            return self._guard.gap_reason  # no frame yet from the head: the next one goes there too
        return at_head

    async def _read(self, send: MemoryObjectSendStream[bytes], cursor: int | None) -> None:
        """Move frames from the websocket to the batcher; the error that ends it is `_error`."""
        # BrokenResourceError: the batcher has left (it failed, or resumes at the head); its
        # error is the one that counts.
        async with send:
            with contextlib.suppress(anyio.BrokenResourceError):
                try:
                    limit = self._targets.max_frame_bytes
                    async for frame in subscribe(self._url, cursor=cursor, max_frame_bytes=limit):
                        await send.send(frame)
                except AtpError as exc:
                    self._error = exc

    async def _ended(self, error: AtpError | None) -> None:
        """After a connection: log why it ended, and skip a frame that was too big to read."""
        if error is None:
            return
        log.warning("event stream disconnected", extra={"source": self.name, "error": str(error)})
        if getattr(error, "error", None) == "FrameTooBig" and not self._out.stopped:
            await self._skip_oversize(error)

    async def _batch_loop(self, receive: MemoryObjectReceiveStream[bytes]) -> None:
        batch, ended = _Batch(), False
        async with receive:
            while not self._out.stopped and not ended:
                try:
                    frame = await self._next(receive, batch)
                except anyio.EndOfStream:
                    frame, ended = None, True
                if frame is not None:
                    try:
                        converted = self._guarded(frame, await self._converter.convert(frame))
                    except (SourceUnavailable, _ResumeAtHead):
                        await self._flush(batch)  # what came before the frame is written
                        raise
                    batch.add(converted)
                    self.frames += 1
                if batch and (ended or len(batch) >= self._batch_size or self._expired(batch)):
                    await self._flush(batch)
                    batch = _Batch()

    def _guarded(self, frame: bytes, converted: Converted) -> Converted:
        """`converted` if its seq may be the next position; else a dead letter that moves nothing."""
        if converted.control == FUTURE_CURSOR:
            raise _ResumeAtHead("future-cursor")
        if converted.control == OUTDATED_CURSOR:
            self._guard.expect_gap("outdated-cursor", self._guard.position)
        seq = converted.seq
        if seq is None:
            self._place_dead_letters(converted)
            return converted
        why = self._guard.refusal(seq)
        if why is None:
            gap = self._guard.accept(seq)
            if gap is not None:
                self.gaps += 1
                log.error("gap recorded", extra={"source": self.name, "after": gap.after, "resumed_at": seq})
                converted.extra.append((self._targets.gaps, gap.fields(self._targets.host)))
            return converted
        self.refused += 1
        position = self._guard.position
        log.warning(
            "frame refused", extra={"source": self.name, "seq": seq, "why": why, "position": position}
        )
        if self._guard.refused(why):
            raise _ResumeAtHead("seq-reset")
        error = f"seq {seq} after {position} (max step {self._guard.max_step})"
        return Converted(
            extra=[(self._targets.dlq, dead_frame_fields(frame, self._targets.host, why, error, seq))]
        )

    def _place_dead_letters(self, converted: Converted) -> None:
        """A frame dead-lettered without a seq (it did not decode) is placed: `after_seq`."""
        if self._guard.position is None:
            return
        for stream, fields in converted.extra:
            letter = cast("dict[bytes, bytes]", fields)  # dead letters are streams.dead_letter_fields
            if stream == self._targets.dlq and not letter.get(b"seq"):
                letter[b"after_seq"] = str(self._guard.position).encode()

    async def _skip_oversize(self, error: AtpError) -> None:
        """The frame after the position is over the size limit: dead-letter its seq, move past it.

        Relays number frames consecutively, so it is position + 1; were it not, the next
        connection meets it again one seq further on, and skips again.
        """
        position = self._guard.position
        if position is None:
            return  # no cursor: the next connection starts at the head, past the frame anyway
        seq = position + 1
        fields = dead_frame_fields(b"", self._targets.host, "oversize-frame", str(error), seq)
        await self._out.write(SourceBatch(extra=[(self._targets.dlq, fields)], cursor=str(seq)))
        self.refused += 1
        self._guard.accept(seq)
        log.error("oversize frame dead-lettered and skipped", extra={"source": self.name, "seq": seq})

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
        cursor = str(batch.seq) if batch.seq is not None else None
        await self._out.write(SourceBatch(batch.entries, extra=batch.extra, cursor=cursor))
        if batch.seq is not None:
            self.last_seq = batch.seq
