"""Dead-letter streams for operators: list, replay onto the stream (audited, metered), purge."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot

from streams._admin import as_text
from streams._audit import audit
from streams._cluster import is_cluster
from streams._deadletter import DLQ_META
from streams._keys import Keys, dlq_key
from streams._metrics import instruments


async def dlq_list(
    redis: aioredis.Redis, stream: str, *, count: int = 100
) -> list[tuple[str, dict[str, str]]]:
    rows: Any = await redis.xrange(dlq_key(stream), count=count)
    return [(as_text(i), {as_text(k): as_text(v) for k, v in f.items()}) for i, f in rows]


async def dlq_replay(
    redis: aioredis.Redis,
    keys: Keys,
    stream: str,
    *,
    count: int = 1000,
    gate: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Move dead-lettered entries back onto their stream (original fields only), atomically each.

    `gate` is awaited before each entry (a rate, the live-lag throttle). Counted in
    `streamfill_replay_events_total` / `streamfill_replay_bytes_total{stream}`.
    """
    rows: Any = await redis.xrange(dlq_key(stream), count=count)
    moved = 0
    for entry_id, fields in rows:
        original = {k: v for k, v in fields.items() if as_text(k) not in DLQ_META}
        if gate is not None and original:
            await gate()
        await _move_back(redis, stream, entry_id, original)
        if original:
            moved += 1
            count_replayed(stream, original)
    await audit(redis, keys, "dlq.replay", stream=stream, moved=moved)
    return moved


async def _move_back(redis: aioredis.Redis, stream: str, entry_id: bytes, original: dict[Any, Any]) -> None:
    if is_cluster(redis) and key_slot(stream.encode()) != key_slot(dlq_key(stream).encode()):
        # No MULTI across slots (a stream without a hash tag): put back, then delete (a crash
        # in between leaves it in both: replayed twice, never lost).
        if original:
            await redis.xadd(stream, original)
        await redis.xdel(dlq_key(stream), entry_id)
        return
    async with redis.pipeline(transaction=True) as pipe:
        if original:
            pipe.xadd(stream, original)
        pipe.xdel(dlq_key(stream), entry_id)
        await pipe.execute()


def count_replayed(stream: str, fields: Mapping[Any, Any]) -> None:
    """Count one replayed entry and its size (field names and values) in the replay metrics."""
    size = sum(len(k) + len(v) for k, v in fields.items())
    attrs = {"stream": stream}
    instruments().replay_events.add(1, attrs)
    instruments().replay_bytes.add(size, attrs)


async def dlq_purge(redis: aioredis.Redis, keys: Keys, stream: str) -> int:
    removed = int(await redis.xlen(dlq_key(stream)))
    await redis.delete(dlq_key(stream))
    await audit(redis, keys, "dlq.purge", stream=stream, removed=removed)
    return removed
