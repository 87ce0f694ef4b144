"""The consumer-group reader: read (own pending first, then new), dispatch, settle, reclaim.

One reader task fills a zero-buffer memory stream; `concurrency` handler tasks take batches from
it, so the reader only reads when a handler is free. A reclaim task periodically takes over entries
other consumers left idle, and a retry scheduler re-claims entries whose handler asked to retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.exceptions import ResponseError

from streams._claims import Claims
from streams._consumer_config import ConsumerConfig, ConsumerStats
from streams._errors import GroupExists, translate
from streams._group_read import GroupReader
from streams._metrics import instruments
from streams._parked import ParkedRetries
from streams._retry import classify
from streams._settle import Settler
from streams._slots import Slots
from streams._types import BatchHandler, DeadLetter, Entry, Outcome, Retry

log = logging.getLogger("streamfill.consumer")


class Consumer:
    """Reads `config.stream` as `config.consumer` in `config.group` and hands batches to `handler`."""

    def __init__(self, redis: aioredis.Redis, config: ConsumerConfig, handler: BatchHandler) -> None:
        self.config = config
        self._redis = redis
        self._reader = GroupReader(redis, config.stream)
        self._handler = handler
        self._claims = Claims(redis, config.stream, config.group, config.consumer)
        self._settler = Settler(
            redis, config.stream, config.group, config.consumer, config.max_deliveries, dlq=config.dlq_stream
        )
        self._retries = ParkedRetries()
        self._uncounted_attempts: dict[str, int] = {}
        self._stopping = False
        self._until_idle = False
        self._stopped: anyio.Event | None = None
        self._slots: Slots  # created in run(): it needs a running event loop
        self._spawn: tuple[TaskGroup, MemoryObjectReceiveStream[list[Entry]]] | None = None
        self._handlers = 0
        self._slot_wait: anyio.CancelScope | None = None  # the reader waiting for a free slot
        self._counts = {"acked": 0, "retried": 0, "dead": 0, "reclaimed": 0, "in_flight": 0}
        self._last_error = ""
        self._attrs = {"stream": config.stream, "group": config.group}

    # -- lifecycle ------------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; an existing group is left as it is."""
        try:
            await self._redis.xgroup_create(
                self.config.stream, self.config.group, id=self.config.group_start_id, mkstream=True
            )
        except ResponseError as exc:
            if not isinstance(translate(exc), GroupExists):
                raise

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until `stop()`: then finish and settle in-flight batches and return."""
        await self.ensure_group()
        self._stopped = anyio.Event()
        if self._stopping:
            self._stopped.set()
        self._slots = Slots(self.config.concurrency)
        # A run after a crash (a Redis blip: streams._supervise) starts with no handler task and
        # no batch in one: the old ones died with the task group.
        self._counts["in_flight"] = self._handlers = 0
        send, receive = anyio.create_memory_object_stream[list[Entry]](self.config.concurrency)
        async with anyio.create_task_group() as tg, receive:
            self._spawn = (tg, receive)
            self._add_handlers()
            tg.start_soon(self._reclaim_loop, send.clone())
            task_status.started()
            try:
                await self._read_loop(send)
            finally:
                self._spawn = None
        log.info("consumer stopped", extra={"stats": self.statistics()})

    async def run_until_idle(self) -> None:
        """Process until nothing is pending, nothing new arrives, and no retry is scheduled."""
        self._until_idle = True
        await self.run()

    def stop(self) -> None:
        """Stop reading; in-flight batches are finished and settled before `run` returns.

        A blocking read in progress is allowed to return (within `block_ms`) rather than
        cancelled: a cancelled XREADGROUP may already have delivered entries we would then leave
        pending.
        """
        self._stopping = True
        if self._stopped is not None:
            self._stopped.set()
        if self._slot_wait is not None:
            self._slot_wait.cancel()

    def retune(self, *, batch_size: int | None = None, concurrency: int | None = None) -> None:
        """Change the read size and the handler slots while running (a live override); batches
        in flight finish as they are, and a smaller pool frees no slot until enough are returned."""
        self.config = replace(
            self.config,
            batch_size=self.config.batch_size if batch_size is None else batch_size,
            concurrency=self.config.concurrency if concurrency is None else concurrency,
        )
        if self._spawn is not None:
            self._slots.resize(self.config.concurrency)
            self._add_handlers()

    def _add_handlers(self) -> None:
        """Start handler tasks up to `concurrency` (tasks are never stopped: surplus ones wait)."""
        assert self._spawn is not None
        tg, receive = self._spawn
        while self._handlers < self.config.concurrency:
            self._handlers += 1
            tg.start_soon(self._handle_loop, receive.clone())

    def statistics(self) -> ConsumerStats:
        c = self.config
        return ConsumerStats(
            c.stream,
            c.group,
            c.consumer,
            self._counts["acked"],
            self._counts["retried"],
            self._counts["dead"],
            self._counts["reclaimed"],
            self._counts["in_flight"],
            len(self._retries),
            self._last_error,
        )

    # -- reading --------------------------------------------------------------------------------

    async def _read_loop(self, send: MemoryObjectSendStream[list[Entry]]) -> None:
        async with send:
            next_id = "0"  # our own pending entries first (a restarted replica resumes its work)
            while not self._stopping:
                # Read only with a free handler slot: nothing is delivered to us that we cannot
                # start on at once (no read-ahead sitting pending while handlers are busy).
                if not await self._free_slot():
                    break
                batch = await self._due_retries()
                read_new = False
                if not batch and next_id == ">" and self._parked_full():
                    self._slots.release()  # nothing new until parked retries come due
                    await self._wait_for_retry()
                    continue
                if not batch:
                    read_new = next_id == ">"
                    batch, next_id = await self._read(next_id)
                if batch:
                    await self._dispatch(send, batch)
                    if read_new and len(batch) < self.config.batch_size:
                        await self._linger()
                    continue
                self._slots.release()
                if self._until_idle and read_new and self._is_idle():
                    self._stopping = True
        self.stop()

    def _parked_full(self) -> bool:
        """Whether a new batch would take us past batch_size x concurrency entries of our own.

        Entries parked for a local retry stay pending on us: they keep their place in the bound,
        so during an outage (every batch retried, uncounted) the reader stops pulling and the
        group's lag grows instead of its pending list.
        """
        c = self.config
        return self._counts["in_flight"] + len(self._retries) + c.batch_size > c.batch_size * c.concurrency

    async def _wait_for_retry(self) -> None:
        """Until the first parked retry is due, or stop()."""
        wait = self._retries.seconds_to_next()
        if wait is None:
            wait = self.config.block_ms / 1000
        with anyio.move_on_after(max(0.0, wait)):
            assert self._stopped is not None
            await self._stopped.wait()

    async def _linger(self) -> None:
        """After a short read (`linger_ms`); not when running until idle."""
        if self.config.linger_ms and not self._until_idle:
            with anyio.move_on_after(self.config.linger_ms / 1000):
                assert self._stopped is not None
                await self._stopped.wait()

    async def _free_slot(self) -> bool:
        """Wait for a handler slot and take it; False (no slot taken) once stopped.

        stop() interrupts the wait: a reader must not outlive a stop waiting for handlers that
        may never free a slot.
        """
        with anyio.CancelScope() as scope:
            self._slot_wait = scope
            if self._stopping:
                scope.cancel()
            await self._slots.acquire()
        self._slot_wait = None
        if scope.cancelled_caught:
            return False
        if self._stopping:  # stopped just as the slot came free: read nothing more
            self._slots.release()
            return False
        return True

    async def _read(self, next_id: str) -> tuple[list[Entry], str]:
        block = None if next_id != ">" else self._block_ms()
        c = self.config
        rows = await self._reader.read(c.group, c.consumer, c.batch_size, block, next_id)
        if next_id == ">":
            stream = self.config.stream
            return [
                Entry(stream, i.decode(), dict(zip(f[::2], f[1::2], strict=True)), 1) for i, f in rows
            ], ">"
        if not rows:
            return [], ">"
        parsed = [(i, dict(zip(f[::2], f[1::2], strict=True)) if f else {}) for i, f in rows]
        return await self._pending_batch(parsed), rows[-1][0].decode()

    async def _pending_batch(self, rows: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> list[Entry]:
        """Our own pending entries re-read at start: deleted ones are recorded, the rest get counts."""
        deleted = [i.decode() for i, f in rows if not f]
        if deleted:
            await self._record_deleted(deleted)
        entries = await self._claims.with_counts([(i, f) for i, f in rows if f])
        return await self._drop_exhausted(entries)

    def _block_ms(self) -> int:
        wait_s = self._retries.seconds_to_next()
        if wait_s is not None:
            wait_ms = int(wait_s * 1000)
            return max(1, min(self.config.block_ms, wait_ms))
        return self.config.block_ms if not self._until_idle else min(self.config.block_ms, 100)

    def _is_idle(self) -> bool:
        return self._counts["in_flight"] == 0 and not self._retries

    # -- handling -------------------------------------------------------------------------------

    async def _handle_loop(self, receive: MemoryObjectReceiveStream[list[Entry]]) -> None:
        async with receive:
            async for batch in receive:
                try:
                    await self._handle(batch)
                finally:
                    self._counts["in_flight"] -= len(batch)
                    self._slots.release()

    async def _dispatch(self, send: MemoryObjectSendStream[list[Entry]], batch: list[Entry]) -> None:
        """Hand a batch to the next free handler task (blocks while all are busy)."""
        self._counts["in_flight"] += len(batch)  # counted before the hand-off: idle checks see it
        try:
            await send.send(batch)
        except BaseException:
            self._counts["in_flight"] -= len(batch)
            raise

    async def _handle(self, batch: list[Entry]) -> None:
        started = time.perf_counter()
        outcomes = await self._call_handler(batch)
        instruments().handler_duration.record(time.perf_counter() - started, self._attrs)
        with anyio.CancelScope(shield=True):  # settling must complete even during shutdown
            settled = await self._settler.settle(batch, outcomes)
        self._counts["acked"] += settled.acked
        self._counts["dead"] += settled.dead
        if self._uncounted_attempts:
            retried = {entry.id for entry, _ in settled.retry}
            for entry in batch:
                if entry.id not in retried:
                    self._uncounted_attempts.pop(entry.id, None)
        for entry, retry in settled.retry:
            self._schedule_retry(entry, retry)

    async def _call_handler(self, batch: list[Entry]) -> Sequence[Outcome]:
        """Run the handler while renewing the lease on its entries; exceptions become outcomes."""
        outcomes: Sequence[Outcome] = ()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._renew_lease, [e.id for e in batch])
                try:
                    # Not shielded: a graceful stop() lets handlers finish (it only cancels the
                    # read), while a crash or a second signal must be able to interrupt them.
                    outcomes = await self._handler(batch)
                finally:
                    tg.cancel_scope.cancel()
            return outcomes
        except Exception as exc:  # a handler bug or a transient failure: never kills the consumer
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.warning("handler failed", extra={"error": self._last_error, "stream": self.config.stream})
            outcome = classify(exc)
            return [outcome] * len(batch)

    async def _renew_lease(self, ids: list[str]) -> None:
        while True:
            await anyio.sleep(self.config.lease_interval_s)
            await self._claims.renew(ids)

    # -- retries and reclaim --------------------------------------------------------------------

    def _schedule_retry(self, entry: Entry, retry: Retry) -> None:
        self._counts["retried"] += 1
        self._last_error = retry.error or self._last_error
        attempt = entry.deliveries
        if not retry.counted:
            attempt = self._uncounted_attempts[entry.id] = self._uncounted_attempts.get(entry.id, 0) + 1
        delay = retry.delay_s if retry.delay_s is not None else self.config.backoff.delay(attempt)
        local_limit = self.config.min_idle_ms / 2000
        if retry.counted and delay >= local_limit:
            return  # a long delay: leave it pending; XAUTOCLAIM redelivers it after min_idle
        keep = None if retry.counted else entry.deliveries
        self._retries.park(entry.id, min(delay, local_limit), keep)

    async def _due_retries(self) -> list[Entry]:
        """Re-claim the entries whose retry time has come (the caller holds a handler slot)."""
        due = self._retries.pop_due(self.config.batch_size)
        if not due:
            return []
        entries, _gone = await self._claims.claim([i for i, keep in due if keep is None])
        entries = await self._drop_exhausted(entries)
        uncounted: dict[int, list[str]] = {}  # delivery count to keep -> ids (one XCLAIM each)
        for entry_id, keep in due:
            if keep is not None:
                uncounted.setdefault(keep, []).append(entry_id)
        for keep, ids in uncounted.items():
            got, _ = await self._claims.claim(ids, keep_count=keep)
            entries += got
        return entries

    async def _drop_exhausted(self, entries: list[Entry]) -> list[Entry]:
        """Dead-letter entries already delivered more than max_deliveries times (e.g. they crash us)."""
        limit = self.config.max_deliveries
        over = [e for e in entries if e.deliveries > limit]
        if over:
            reason = f"max deliveries ({limit}) exceeded"
            await self._settler.dead_letter([(e, DeadLetter(reason=reason)) for e in over])
            self._counts["dead"] += len(over)
        return [e for e in entries if e.deliveries <= limit]

    async def _record_deleted(self, ids: list[str]) -> None:
        """Entries trimmed/deleted while pending: nothing to process, but leave a record of them."""
        log.error("pending entries were deleted before processing", extra={"ids": ids[:20]})
        items = [
            (Entry(self.config.stream, i, {}, 0), DeadLetter(reason="deleted while pending")) for i in ids
        ]
        await self._settler.dead_letter(items)

    async def _reclaim_loop(self, send: MemoryObjectSendStream[list[Entry]]) -> None:
        async with send:
            while not self._stopping:
                with anyio.move_on_after(self.config.reclaim_interval_s):
                    assert self._stopped is not None
                    await self._stopped.wait()
                if self._stopping:
                    return
                await self.reclaim_once(send)

    async def reclaim_once(self, send: MemoryObjectSendStream[list[Entry]]) -> int:
        """Take over every entry idle past min_idle (one XAUTOCLAIM sweep); returns how many."""
        start, total = "0-0", 0
        while True:
            await self._slots.acquire()
            if self._parked_full():  # taking more over would pass the bound: next sweep
                self._slots.release()
                break
            page = await self._claims.autoclaim(self.config.min_idle_ms, start, self.config.batch_size)
            if page.deleted:
                await self._record_deleted(page.deleted)
            entries = await self._drop_exhausted(page.entries)
            if entries:
                total += len(entries)
                await self._dispatch(send, entries)
            else:
                self._slots.release()
            start = page.next_start
            if start == "0-0" or self._stopping:
                break
        if total:
            self._counts["reclaimed"] += total
            instruments().reclaimed.add(total, self._attrs)
        return total
