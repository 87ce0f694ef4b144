"""Where stream entries stand for a consumer group: missing, undelivered, pending or acked.

For a source that remembers which entries it wrote (a ledger of work in flight) and must tell,
after a restart, which of them are still coming, which are done and which were lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from streams._types import id_key

# Entries checked per pipeline round trip.
_CHUNK = 500


class EntryState(Enum):
    MISSING = "missing"  # not in the stream (trimmed, deleted, or never written)
    UNDELIVERED = "undelivered"  # after the group's last-delivered id
    PENDING = "pending"  # delivered, not acked
    ACKED = "acked"


async def entry_states(
    redis: aioredis.Redis, stream: str, group: str, ids: Sequence[str | None]
) -> list[EntryState]:
    """The state of each id (None: MISSING) in `group`, in order."""
    last = await _last_delivered(redis, stream, group)
    states: list[EntryState] = []
    for start in range(0, len(ids), _CHUNK):
        states.extend(await _states(redis, stream, group, ids[start : start + _CHUNK], last))
    return states


async def _states(
    redis: aioredis.Redis, stream: str, group: str, ids: Sequence[str | None], last: tuple[int, int] | None
) -> list[EntryState]:
    real = [i for i in ids if i]
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in real:
            pipe.xrange(stream, entry_id, entry_id, count=1)
            if last is not None:
                pipe.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        replies = iter(await pipe.execute())
    found: dict[str, EntryState] = {}
    for entry_id in real:
        exists = bool(next(replies))
        pending = bool(next(replies)) if last is not None else False
        found[entry_id] = _state(entry_id, exists, pending, last)
    return [found[i] if i else EntryState.MISSING for i in ids]


def _state(entry_id: str, exists: bool, pending: bool, last: tuple[int, int] | None) -> EntryState:
    if not exists:
        return EntryState.MISSING
    if pending:
        return EntryState.PENDING
    if last is None or id_key(entry_id) > last:
        return EntryState.UNDELIVERED
    return EntryState.ACKED


async def _last_delivered(redis: aioredis.Redis, stream: str, group: str) -> tuple[int, int] | None:
    """The group's last-delivered id, or None when the stream or the group does not exist."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except ResponseError:
        return None
    for g in groups:
        name = g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
        if name == group:
            last = g["last-delivered-id"]
            return id_key(last.decode() if isinstance(last, bytes) else str(last))
    return None
