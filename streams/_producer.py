"""Batched, pipelined XADD with high-water-mark backpressure and cursors that move with the data.

Each `send` is one MULTI/EXEC: the batch's XADDs, the optional source cursor, and a reading of the
target's backlog taken after the batch, so backpressure costs no extra round trip. While the last
reading is at or above the high mark, `send` blocks (it never drops and never buffers) until the
backlog falls below the low mark. One producer therefore overshoots the mark by at most one batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
import redis.asyncio as aioredis

from streams._metrics import instruments, set_gauge

log = logging.getLogger("streamfill.producer")

Fields = Mapping[bytes | str, bytes | str]


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """Where to write and when to block. `high_water = None` disables backpressure."""

    stream: str
    high_water: int | None = 100_000
    low_water: int | None = None  # default: 90% of the high mark
    poll_interval_s: float = 0.05
    max_poll_interval_s: float = 1.0

    @property
    def low(self) -> int:
        if self.high_water is None:
            return 0
        return self.low_water if self.low_water is not None else max(0, int(self.high_water * 0.9))


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """A snapshot of one producer."""

    stream: str
    produced: int
    backlog: int
    blocked: bool
    blocked_seconds: float
    waits: int


class Producer:
    """Writes batches to one stream."""

    def __init__(self, redis: aioredis.Redis, config: ProducerConfig) -> None:
        self.config = config
        self._redis = redis
        self._backlog = 0
        self._produced = 0
        self._blocked = False
        self._blocked_s = 0.0
        self._waits = 0
        self._attrs = {"stream": config.stream}

    async def send(
        self,
        batch: Sequence[Fields],
        *,
        cursor: tuple[str, str] | None = None,
        cursors: Sequence[tuple[str, str]] = (),
        extra: Sequence[tuple[str, Fields]] = (),
    ) -> list[str]:
        """XADD `batch` (and `extra` (stream, fields) pairs), SET `cursor`/`cursors`, in one MULTI.

        Returns the new entry ids of `batch`.

        Blocks first while the target's backlog is at or above the high mark.
        """
        await self.wait_below_mark()
        async with self._redis.pipeline(transaction=True) as pipe:
            for fields in batch:
                pipe.xadd(self.config.stream, fields)  # type: ignore[arg-type]
            for stream, fields in extra:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            for key, value in ((cursor,) if cursor is not None else ()) + tuple(cursors):
                pipe.set(key, value)
            if self.config.high_water is not None:
                queue_backlog_reading(pipe, self.config.stream)
            replies = await pipe.execute()
        if self.config.high_water is not None:
            self._backlog = backlog_from_replies(replies[-2], replies[-1])
        self._produced += len(batch)
        instruments().produced.add(len(batch), self._attrs)
        return [r.decode() if isinstance(r, bytes) else str(r) for r in replies[: len(batch)]]

    async def wait_below_mark(self) -> None:
        """Block while the backlog is at or above the high mark, until it is below the low mark."""
        high = self.config.high_water
        if high is None or self._backlog < high:
            return
        self._enter_blocked()
        started, delay = time.monotonic(), self.config.poll_interval_s
        try:
            while True:
                self._backlog = await read_backlog(self._redis, self.config.stream)
                if self._backlog < self.config.low:
                    return
                await anyio.sleep(delay)
                delay = min(delay * 1.5, self.config.max_poll_interval_s)
        finally:
            self._blocked_s += time.monotonic() - started
            self._blocked = False
            set_gauge("streamfill_backpressure_active", 0, **self._attrs)

    def _enter_blocked(self) -> None:
        self._blocked = True
        self._waits += 1
        instruments().backpressure_waits.add(1, self._attrs)
        set_gauge("streamfill_backpressure_active", 1, **self._attrs)
        log.info("backpressure: blocking", extra={"stream": self.config.stream, "backlog": self._backlog})

    async def set_cursor(self, key: str, value: str) -> None:
        await self._redis.set(key, value)

    def statistics(self) -> ProducerStats:
        return ProducerStats(
            self.config.stream, self._produced, self._backlog, self._blocked, self._blocked_s, self._waits
        )


def queue_backlog_reading(pipe: aioredis.client.Pipeline, stream: str) -> None:
    pipe.xlen(stream)
    pipe.xinfo_groups(stream)


def backlog_from_replies(length: int, groups: list[dict[str, object]]) -> int:
    """The slowest group's backlog (lag + pending) where the server reports lag, else XLEN.

    Pending entries count too: they are delivered but not done, and a consumer that dies holds them.
    """
    if not groups:
        return int(length)
    worst = 0
    for group in groups:
        lag = group.get("lag")
        lag_value = int(length) if lag is None else int(lag)  # type: ignore[call-overload]
        worst = max(worst, lag_value + int(group.get("pending", 0)))  # type: ignore[call-overload]
    return worst


async def read_backlog(redis: aioredis.Redis, stream: str) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        queue_backlog_reading(pipe, stream)
        length, groups = await pipe.execute()
    return backlog_from_replies(length, groups)
