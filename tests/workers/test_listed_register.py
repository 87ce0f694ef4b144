"""The listed register: which (rev, active, host) changes enqueue a job again, checked by its script."""

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


async def test_a_host_the_account_left_does_not_flip_it(redis_client: aioredis.Redis, prefix: str) -> None:
    """PDS A, which the account left at rev NEW, lists it deactivated at NEW; B, its host now, lists
    it active at NEW; the relay (untagged) too. After at most two jobs more, no round enqueues it,
    whatever the order; a real deactivation (by B, or seen by the relay) still does."""
    keys = Keys(prefix)
    producer = Producer(redis_client, ProducerConfig(keys.stream("repo_backfill"), high_water=None))

    async def listed(source: str | None, active: bool, rev: str = NEW) -> bool:
        mark = listed_mark(keys, "repo_backfill", DID, rev, active, source=source)
        [entry_id] = await producer.send_marked([{"did": DID}], [mark])
        return entry_id is not None

    relay, old, new = (None, True), ("a.example", False), ("b.example", True)
    assert await listed(*relay)  # new
    assert await listed(*old)  # an untagged active can be undone: one job more
    assert await listed(*new)  # reactivated: one more
    for order in ((old, new, relay), (relay, new, old), (new, old, relay)):
        assert [await listed(*state) for state in order] == [False] * 3

    await redis_client.delete(
        *[k async for k in redis_client.scan_iter(keys.listed_pattern("repo_backfill"))]
    )
    assert await listed(*relay)
    assert not await listed(*new)  # the same, from B: B takes the slot over, no job
    assert not await listed(*old)  # so A's deactivation is stale at once
    assert await listed("b.example", False)  # B deactivates it: a job
    assert not await listed(*old)
    assert await listed(*new)  # B reactivates it: a job
    assert await listed(None, False)  # the relay says it is deactivated: believed
    assert await listed("a.example", True, OLD) is False  # an older rev, from anywhere: skipped


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
    assert mark_value(OLD, True, "pds.example")[:8] == mark_value(OLD, True)
    assert len(mark_value(OLD, True, "pds.example")) == len(mark_value("x", False, "pds.example")) == 10
    assert mark_value("x", True)[:7] == mark_value("x", False)[:7]  # an opaque rev keeps `active` apart
    marks = [listed_mark(keys, "repo_backfill", f"did:plc:{n:024d}", OLD, True) for n in range(20_000)]
    assert all(len(m.field) == 5 for m in marks)
    buckets = {m.key for m in marks}
    assert len(buckets) > 19_000  # 20k DIDs over 2^19 buckets: almost all alone
    assert all(int(k.rsplit(":", 1)[1], 16) < LISTED_BUCKETS for k in buckets)
