"""entry_states: where entries stand for a group, as a ledger of work in flight needs to know."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from streams import EntryState, Keys, entry_states
from tests._support import xadd

pytestmark = pytest.mark.anyio


@pytest.mark.leaves_pending("it inspects a pending entry")
async def test_missing_undelivered_pending_and_acked(redis_client: aioredis.Redis, prefix: str) -> None:
    stream = Keys(prefix).stream("s")
    ids = [(await xadd(redis_client, stream, {"n": str(i)})).decode() for i in range(5)]
    # No group yet: everything present is still to come.
    assert await entry_states(redis_client, stream, "g", [ids[0], None]) == [
        EntryState.UNDELIVERED, EntryState.MISSING,
    ]  # fmt: skip
    await redis_client.xgroup_create(stream, "g", id="0")
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=3)  # ids 0-2 delivered
    await redis_client.xack(stream, "g", ids[0])
    await redis_client.xdel(stream, ids[1])
    states = await entry_states(redis_client, stream, "g", [*ids, "1-0"])
    assert states == [
        EntryState.ACKED,  # delivered and acked
        EntryState.MISSING,  # deleted (trimmed) from the stream
        EntryState.PENDING,
        EntryState.UNDELIVERED,
        EntryState.UNDELIVERED,
        EntryState.MISSING,  # never written
    ]
