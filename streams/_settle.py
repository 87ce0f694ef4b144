"""Applying outcomes: XACK what is done, dead-letter (XADD to `<stream>:dlq` + XACK in one MULTI)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.crc import key_slot

from streams._cluster import is_cluster
from streams._deadletter import dead_letter_fields
from streams._keys import dlq_key
from streams._metrics import instruments
from streams._types import DONE, DeadLetter, Done, Entry, Outcome, Retry


@dataclass(slots=True)
class Settled:
    """What one settle call did: ids acked, entries to retry (with their Retry), entries dead-lettered."""

    acked: int = 0
    dead: int = 0
    retry: list[tuple[Entry, Retry]] = field(default_factory=list)


def dlq_fields(entry: Entry, outcome: DeadLetter, consumer: str) -> dict[bytes, bytes]:
    """A consumer's dead letter: the entry's fields, where it was read, how often it was tried."""
    return dead_letter_fields(
        entry.fields,
        reason=outcome.reason,
        error=outcome.error,
        consumer=consumer,
        attempts=entry.deliveries,
        source_stream=entry.stream,
        source_id=entry.id,
    )


class Settler:
    """Turns per-entry outcomes into Redis writes for one (stream, group, consumer)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        max_deliveries: int,
        *,
        dlq: str | None = None,
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._dlq = dlq or dlq_key(stream)
        self._group = group
        self._consumer = consumer
        self._max_deliveries = max_deliveries
        # On Redis Cluster a MULTI must stay in one slot: `<stream>:dlq` shares the stream's slot
        # when the stream key has a hash tag (partition keys do); a DLQ elsewhere is written
        # first and acked after (never lost; on a crash in between, a duplicate in the DLQ).
        self._split = is_cluster(redis) and key_slot(self._dlq.encode()) != key_slot(stream.encode())
        self._attrs = {"stream": stream, "group": group}

    async def settle(self, entries: Sequence[Entry], outcomes: Sequence[Outcome]) -> Settled:
        if len(entries) != len(outcomes):
            raise RuntimeError(f"handler returned {len(outcomes)} outcomes for {len(entries)} entries")
        result = Settled()
        if isinstance(outcomes, list) and outcomes.count(DONE) == len(outcomes):  # the common case
            await self._write([e.id for e in entries], [])
            result.acked = len(entries)
            self._count(result)
            return result
        done: list[str] = []
        dead: list[tuple[Entry, DeadLetter]] = []
        for entry, outcome in zip(entries, outcomes, strict=True):
            if isinstance(outcome, Done):
                done.append(entry.id)
            elif isinstance(outcome, DeadLetter):
                dead.append((entry, outcome))
            elif outcome.counted and entry.deliveries >= self._max_deliveries:
                reason = f"max deliveries ({self._max_deliveries}) reached"
                dead.append((entry, DeadLetter(reason=reason, error=outcome.error)))
            else:
                result.retry.append((entry, outcome))
        await self._write(done, dead)
        result.acked, result.dead = len(done), len(dead)
        self._count(result)
        return result

    async def dead_letter(self, items: Sequence[tuple[Entry, DeadLetter]]) -> None:
        """Dead-letter entries without running a handler (e.g. delivered too often already)."""
        await self._write([], items)
        instruments().dead_lettered.add(len(items), self._attrs)

    async def _write(self, done: list[str], dead: Sequence[tuple[Entry, DeadLetter]]) -> None:
        if not dead:
            if done:
                # Encoding here is ~10x cheaper than redis-py's per-argument encoder on str ids.
                await self._redis.xack(self._stream, self._group, *[i.encode() for i in done])
            return
        if self._split:
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry, outcome in dead:
                    pipe.xadd(self._dlq, dlq_fields(entry, outcome, self._consumer))  # type: ignore[arg-type]
                await pipe.execute()
            await self._redis.xack(self._stream, self._group, *done, *(e.id for e, _ in dead))
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for entry, outcome in dead:
                pipe.xadd(self._dlq, dlq_fields(entry, outcome, self._consumer))  # type: ignore[arg-type]
            pipe.xack(self._stream, self._group, *done, *(e.id for e, _ in dead))
            await pipe.execute()

    def _count(self, result: Settled) -> None:
        ins = instruments()
        if result.acked:
            ins.processed.add(result.acked, self._attrs)
        if result.dead:
            ins.dead_lettered.add(result.dead, self._attrs)
        if result.retry:
            ins.failed.add(len(result.retry), self._attrs)
