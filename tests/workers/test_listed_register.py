"""The listed register: which (rev, active) changes enqueue a job again, checked by the script itself."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from atp.tid import encode_tid
from streams import Keys, Producer, ProducerConfig
from workers.ingester.register import LISTED_BUCKETS, listed_mark, mark_value

pytestmark = pytest.mark.anyio

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
OLD, NEW = encode_tid(1_000 << 10), encode_tid(2_000 << 10)


async def test_a_job_is_written_once_per_rev_and_active(redis_client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    producer = Producer(redis_client, ProducerConfig(keys.stream("repo_backfill"), high_water=None))

    async def listed(rev: str | None, active: bool) -> bool:
        mark = listed_mark(keys, "repo_backfill", DID, rev, active)
        [entry_id] = await producer.send_marked([{"did": DID}], [mark])
        return entry_id is not None

    steps = [
        ((OLD, True), True),  # new
        ((OLD, True), False),  # unchanged
        ((NEW, True), True),  # newer rev
        ((OLD, True), False),  # older rev (a lagging source): skipped
        ((NEW, False), True),  # same rev, went inactive
        ((NEW, False), False),
        ((NEW, True), True),  # reactivated
        (("not-a-tid", True), True),  # opaque revs compare for equality only
        (("not-a-tid", True), False),
        ((OLD, True), True),
    ]
    assert [await listed(*state) for state, _ in steps] == [written for _, written in steps]
    assert await redis_client.xlen(keys.stream("repo_backfill")) == sum(w for _, w in steps)


async def test_unmarked_entries_and_cursors_are_written_with_marked_ones(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    producer = Producer(redis_client, ProducerConfig(keys.stream("s"), high_water=None))
    mark = listed_mark(keys, "s", DID, OLD, True)
    batch = [{"a": "1"}, {"b": "2"}]
    ids = await producer.send_marked(batch, [mark, None], cursors=[(keys.cursor("s", "h"), "7")])
    assert all(ids)
    ids = await producer.send_marked(batch, [mark, None], cursors=[(keys.cursor("s", "h"), "8")])
    assert ids[0] is None and ids[1] is not None
    assert await redis_client.get(keys.cursor("s", "h")) == b"8"
    assert producer.statistics().produced == 3


def test_marks_are_compact_and_spread_over_the_buckets() -> None:
    keys = Keys()
    assert mark_value(OLD, True) != mark_value(OLD, False)
    assert len(mark_value(OLD, True)) == len(mark_value("x", True)) == 8
    marks = [listed_mark(keys, "repo_backfill", f"did:plc:{n:024d}", OLD, True) for n in range(20_000)]
    assert all(len(m.field) == 5 for m in marks)
    buckets = {m.key for m in marks}
    assert len(buckets) > 19_000  # 20k DIDs over 2^19 buckets: almost all alone
    assert all(int(k.rsplit(":", 1)[1], 16) < LISTED_BUCKETS for k in buckets)
