"""The producing side's interface: a `Source` hands batches to a `SourceRunner`, which owns the rest.

A source knows how to read its upstream (a paged listing, a websocket, a directory of files) and
turns what it reads into `SourceBatch`es: entries for its stream, dead letters, entries for other
streams, and the cursor that covers them. The runner owns everything around that, once:

- **cursor reads**: each session starts from the cursor stored at `cursor_key`; without one, from
  the cursor the pass last wrote (kept in memory: every pass starts from the beginning);
- **atomic writes**: a batch and its cursor go out in one `Producer.send` (never a cursor ahead
  of its data); a source with its own sink (no producer) writes its data itself, then a batch of
  only its cursor;
- **backoff**: a session that fails (`SourceError`) is retried from the stored cursor after a
  jittered exponential delay (or the error's `retry_after_s`); the count resets only when the
  cursor moves, so a source that fails at once, or delivers nothing usable, is not hammered; a
  `disconnect` after the cursor moved is resumed at once, uncounted;
- **skip-ahead**: after `skip.max_failures` skippable failures at one numeric cursor the cursor
  moves on by `skip.step` and the range is ledgered (`record_skip`), as is a range a source skips
  itself (`skip_to`, e.g. a listing whose cursor cycles);
- **give-up**: with `give_up_after`, a pass that keeps failing unskippably ends (cursor kept);
- **stopping**: one stop event; `sleep` waits unless stopped; `stop()` interrupts the source.

Sources are callback-driven (`session(cursor, out)` writes through `out`) rather than async
generators: a source that reads in a task group (a websocket reader beside its batcher) cannot
yield from inside it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus

from streams._errors import SourceError
from streams._keys import dlq_key
from streams._ledger import record_skip
from streams._producer import Fields, Mark, Producer
from streams._retry import Backoff, SkipAhead, SkipDecision

log = logging.getLogger("streamfill.source")

# After a session that moved the cursor and then was disconnected, the next one starts this
# soon: the upstream was working (a relay that drops long connections), so no backoff.
SETTLE_S = 0.05


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """What a source writes in one step; `cursor` (None: unchanged) covers all of it."""

    entries: Sequence[Fields] = ()
    marks: Sequence[Mark | None] | None = None  # one register slot per entry (`Producer.send_marked`)
    dead_letters: Sequence[Fields] = ()  # to the DLQ of the producer's stream
    extra: Sequence[tuple[str, Fields]] = ()  # (stream key, fields) for other streams
    cursor: str | None = None


class Outlet(Protocol):
    """What a source writes to during a session (the runner)."""

    @property
    def stopped(self) -> bool: ...

    async def write(self, batch: SourceBatch) -> list[str | None]: ...

    async def skip_to(self, start: str, end: str, reason: str) -> None: ...

    async def sleep(self, seconds: float) -> None: ...


class Source(Protocol):
    """An upstream read in sessions (a pass, a connection) from a cursor."""

    name: str

    async def session(self, cursor: str | None, out: Outlet) -> float | None:
        """Read from `cursor`, writing through `out`, until the pass is over or a `SourceError`.

        Returns how long to wait before the next pass; None: the source is finished.
        """
        ...

    def interrupt(self) -> None:
        """The runner is stopping: end the session soon (cancel a blocking read, say)."""
        ...


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """The runner's policy; `skip` (max failures, step) needs a `ledger_key`."""

    cursor_key: str | None = None
    ledger_key: str | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, cap_s=30.0))
    skip: tuple[int, int] | None = None
    give_up_after: int | None = None


@dataclass(frozen=True, slots=True)
class SourceStats:
    """A snapshot of one runner."""

    name: str
    sessions: int
    batches: int
    failures: int
    skipped: int
    abandoned: int


class SourceRunner:
    """Runs one `Source` into one producer; a runtime Component."""

    def __init__(
        self, redis: aioredis.Redis, source: Source, producer: Producer | None, config: RunnerConfig
    ) -> None:
        self._redis = redis
        self._source = source
        self.producer = producer  # None: a source that writes nothing (it has its own sink)
        self.config = config
        self._skip = SkipAhead(*config.skip) if config.skip is not None else None
        self._stop = anyio.Event()
        self._cursor: str | None = None  # without a cursor key: the pass's position
        self._failures = 0  # failed sessions since the cursor last moved
        self._moved = False  # the current session moved the cursor
        self._skipped = False  # the current pass skipped ahead
        self.sessions = self.batches = self.failed = self.skips = self.abandoned = 0

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def give_up(self, why: str) -> None:
        """Count a pass its caller gave up (e.g. skipped ahead twice in a row), as the runner's own are."""
        self.abandoned += 1
        log.error("pass given up", extra={"source": self._source.name, "error": why})

    def stop(self) -> None:
        self._stop.set()
        self._source.interrupt()

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less when stopped."""
        with anyio.move_on_after(seconds):
            await self._stop.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Passes until the source is finished or stopped, each after the pause the last one asked."""
        task_status.started()
        while not self.stopped:
            more, pause = await self._pass()
            if more:
                continue
            if pause is None:
                return
            await self.sleep(pause)

    async def run_pass(self) -> bool:
        """One pass; True when it skipped ahead (there is more to do at once)."""
        more, _ = await self._pass()
        return more

    async def _pass(self) -> tuple[bool, float | None]:
        """Sessions until one ends the pass; (skipped ahead, the pause it asked for)."""
        self._failures, self._skipped, self._cursor = 0, False, None
        while not self.stopped:
            cursor = await self.read_cursor()
            self.sessions += 1
            self._moved = False
            try:
                return False, await self._source.session(cursor, self)
            except SourceError as exc:
                if await self._failed(cursor, exc):  # skipped ahead, or given up
                    return self._skipped, 0.0 if self._skipped else self.config.backoff.cap_s
        return False, 0.0

    async def read_cursor(self) -> str | None:
        if self.config.cursor_key is None:
            return self._cursor
        raw = await self._redis.get(self.config.cursor_key)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def write(self, batch: SourceBatch) -> list[str | None]:
        """Write `batch` and its cursor in one step; a moved cursor resets the failure count."""
        if self.producer is None and not (batch.entries or batch.dead_letters or batch.extra):
            await self._move(batch.cursor)  # a source with its own sink wrote its data itself
            return []
        producer = self._require_producer()
        extra = [(dlq_key(producer.config.stream), d) for d in batch.dead_letters] + list(batch.extra)
        cursors = []
        if batch.cursor is not None:
            cursors.append((self._require_cursor_key(), batch.cursor))
        if batch.marks is not None:
            marks = batch.marks
            ids: list[str | None] = await producer.send_marked(
                batch.entries, marks, cursors=cursors, extra=extra
            )
        else:
            ids = list(await producer.send(batch.entries, cursors=cursors, extra=extra))
        self.batches += 1
        if batch.cursor is not None:
            self._progressed()
        return ids

    async def skip_to(self, start: str, end: str, reason: str) -> None:
        """Move the cursor from `start` to `end` and ledger the range, in one step."""
        decision = SkipDecision(retry_same=False, skip_from=start, skip_to=end, failures=1)
        await self._record(decision, reason)

    async def _move(self, cursor: str | None) -> None:
        """Only the cursor moves (None: it stays)."""
        if cursor is None:
            return
        if self.config.cursor_key is None:
            self._cursor = cursor
        else:
            await self._redis.set(self.config.cursor_key, cursor)
        self.batches += 1
        self._progressed()

    def _progressed(self) -> None:
        self._moved = True
        self._failures = 0
        if self._skip is not None:
            self._skip.succeeded()

    async def _failed(self, cursor: str | None, exc: SourceError) -> bool:
        """Count a failed session; back off, or skip ahead or give up (True: the pass is over)."""
        self.failed += 1
        name = self._source.name
        skippable = self._skip is not None and exc.skippable and (cursor or "0").isdigit()
        if skippable and self._skip is not None:
            decision = self._skip.failed(cursor or "")
            if not decision.retry_same:
                reason = f"{decision.failures} consecutive failures: {exc}"
                await self._record(decision, reason)
                self._skipped = True
                log.error("skipped ahead", extra={"source": name, "from": cursor, "to": decision.skip_to})
                return True
        if self._moved and exc.disconnect:
            await self.sleep(exc.retry_after_s or SETTLE_S)
            return False
        self._failures += 1
        limit = self.config.give_up_after
        if limit is not None and not skippable and (exc.permanent or self._failures >= limit):
            self.abandoned += 1
            log.error("pass given up", extra={"source": name, "cursor": cursor, "error": str(exc)})
            return True
        await self.sleep(exc.retry_after_s or self.config.backoff.delay(self._failures))
        return False

    async def _record(self, decision: SkipDecision, reason: str) -> None:
        ledger = self.config.ledger_key
        if ledger is None:
            raise ValueError(f"{self._source.name}: skipping ahead needs a ledger key")
        await record_skip(self._redis, self._require_cursor_key(), ledger, decision, reason)
        self.skips += 1
        self._progressed()

    def _require_producer(self) -> Producer:
        if self.producer is None:
            raise ValueError(f"{self._source.name}: writing needs a producer")
        return self.producer

    def _require_cursor_key(self) -> str:
        if self.config.cursor_key is None:
            raise ValueError(f"{self._source.name}: moving a cursor needs a cursor key")
        return self.config.cursor_key

    def statistics(self) -> SourceStats:
        return SourceStats(
            self._source.name, self.sessions, self.batches, self.failed, self.skips, self.abandoned
        )
