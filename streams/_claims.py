"""Ownership of pending entries: XAUTOCLAIM reclaim, lease renewal, claims for local retries.

Delivery counts always come from Redis (XPENDING), never from a counter kept in memory, so a
poison entry that crashes its worker every time still reaches `max_deliveries`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from streams._types import Entry, id_key


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(slots=True)
class Claimed:
    """Entries taken over by one XAUTOCLAIM page, and the ids Redis reported deleted."""

    entries: list[Entry] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    next_start: str = "0-0"


class Claims:
    """Claim operations for one (stream, group, consumer)."""

    def __init__(self, redis: aioredis.Redis, stream: str, group: str, consumer: str) -> None:
        self._redis = redis
        self._stream = stream
        self._group = group
        self._consumer = consumer

    async def delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        """Redis' delivery count for each id still pending for this consumer."""
        if not ids:
            return {}
        rows: Any = await self._redis.xpending_range(
            self._stream,
            self._group,
            min=min(ids, key=id_key),
            max=max(ids, key=id_key),
            count=max(len(ids) * 2, 10),
            consumername=self._consumer,
        )
        wanted = set(ids)
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows if _s(r["message_id"]) in wanted}

    async def with_counts(self, raw: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> list[Entry]:
        ids = [_s(i) for i, _ in raw]
        counts = await self.delivery_counts(ids)
        return [
            Entry(self._stream, i, fields, counts.get(i, 1))
            for i, (_, fields) in zip(ids, raw, strict=True)
            if i in counts  # not ours any more (acked or claimed away meanwhile)
        ]

    async def autoclaim(self, min_idle_ms: int, start: str, count: int) -> Claimed:
        """One XAUTOCLAIM page. Redis 7+ also returns ids deleted (trimmed) while pending."""
        reply: Any = await self._redis.xautoclaim(
            self._stream, self._group, self._consumer, min_idle_ms, start_id=start, count=count
        )
        claimed = Claimed(next_start=_s(reply[0]))
        live = [(i, f) for i, f in reply[1] if i is not None and f]
        claimed.deleted = [_s(i) for i in (reply[2] if len(reply) > 2 else [])]
        claimed.deleted += [_s(i) for i, f in reply[1] if i is not None and not f]
        claimed.entries = await self.with_counts(live)
        return claimed

    async def claim(
        self, ids: Sequence[str], *, keep_count: int | None = None
    ) -> tuple[list[Entry], list[str]]:
        """Take back our own pending ids for a retry; also the ids that are gone.

        XCLAIM bumps the delivery count, unless `keep_count` sets it (RETRYCOUNT) to that value.
        """
        if not ids:
            return [], []
        raw: Any = await self._redis.xclaim(
            self._stream, self._group, self._consumer, 0, list(ids), retrycount=keep_count
        )
        live = [(i, f) for i, f in raw if i is not None and f]
        got = {_s(i) for i, _ in live}
        return await self.with_counts(live), [i for i in ids if i not in got]

    async def renew(self, ids: Sequence[str]) -> None:
        """Reset the idle time of entries we are still working on, so XAUTOCLAIM leaves them alone.

        JUSTID does not bump the delivery count.
        """
        if ids:
            await self._redis.xclaim(self._stream, self._group, self._consumer, 0, list(ids), justid=True)
