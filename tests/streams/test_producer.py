"""Producer: backpressure at the high mark, cursor atomic with the batch, skip-ahead ledger."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis

from streams import (
    DONE,
    Consumer,
    ConsumerConfig,
    Entry,
    Keys,
    Mark,
    Outcome,
    Producer,
    ProducerConfig,
    SkipAhead,
    read_backlog,
    record_skip,
    skipped_ranges,
)
from tests._support import wait_until, xrange

pytestmark = pytest.mark.anyio


def batch_of(n: int, start: int) -> list[dict[str, str]]:
    return [{"n": str(start + i)} for i in range(n)]


async def test_backpressure_blocks_at_high_mark_and_resumes_below_low_mark(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    stream = keys.stream("out")
    await redis_client.xgroup_create(stream, "g", id="0", mkstream=True)
    high, low, size, total = 100, 60, 10, 400
    producer = Producer(
        redis_client, ProducerConfig(stream, high_water=high, low_water=low, poll_interval_s=0.01)
    )
    sent = 0
    worst = 0

    async def produce() -> None:
        nonlocal sent, worst
        while sent < total:
            await producer.send(batch_of(size, sent))
            sent += size
            worst = max(worst, await read_backlog(redis_client, stream))

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        # Nobody consumes: the producer must stop at the mark and wait, not drop or buffer.
        await wait_until(lambda: producer.statistics().blocked, what="producer blocked")
        assert high <= await redis_client.xlen(stream) < high + size
        blocked_at = sent
        consumed: list[str] = []
        resumed_below: list[int] = []

        async def slow(entries: Sequence[Entry]) -> Sequence[Outcome]:
            if sent > blocked_at and not resumed_below:
                resumed_below.append(len(consumed))
            consumed.extend(e.id for e in entries)
            return [DONE] * len(entries)

        consumer = Consumer(
            redis_client, ConsumerConfig(stream, "g", "c", batch_size=5, concurrency=1, block_ms=20), slow
        )
        tg.start_soon(consumer.run)
        await wait_until(lambda: len(consumed) == total, what="everything consumed")
        consumer.stop()
    assert sent == total and await redis_client.xlen(stream) == total  # nothing dropped
    assert worst < high + size  # never more than one batch over the mark
    # It resumed only once the backlog had fallen below the low mark (>= high - low consumed).
    assert resumed_below and resumed_below[0] >= high - low - size
    assert producer.statistics().waits >= 1


async def test_backlog_without_groups_is_the_stream_length(redis_client: aioredis.Redis, prefix: str) -> None:
    stream = Keys(prefix).stream("out")
    producer = Producer(redis_client, ProducerConfig(stream, high_water=1000))
    await producer.send(batch_of(7, 0))
    assert producer.statistics().backlog == 7


async def test_cursor_is_written_with_its_batch(redis_client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    stream, cursor = keys.stream("out"), keys.cursor("out", "relay.test")
    producer = Producer(redis_client, ProducerConfig(stream, high_water=None))
    violations: list[tuple[int, int]] = []
    finished = False

    async def observe() -> None:
        # Read cursor and length in one MULTI: the cursor may never run ahead of the data.
        while not finished:
            async with redis_client.pipeline(transaction=True) as pipe:
                pipe.get(cursor)
                pipe.xlen(stream)
                value, length = await pipe.execute()
            if value is not None and int(value) > length:
                violations.append((int(value), length))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(observe)
        for start in range(0, 500, 25):
            await producer.send(batch_of(25, start), cursor=(cursor, str(start + 25)))
        finished = True
    assert violations == []
    assert await redis_client.get(cursor) == b"500"
    assert await redis_client.xlen(stream) == 500


async def test_scripts_go_by_evalsha_alone_and_come_back_after_a_flush(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    """A batch is one EVALSHA (no SCRIPT EXISTS before it, as redis-py's pipelined scripts send);
    a server that lost the scripts (SCRIPT FLUSH, a restart) is sent them by SCRIPT LOAD, once,
    and the batch is written once, with its backlog reading and its cursor."""
    keys = Keys(prefix)
    stream, cursor = keys.stream("out"), keys.cursor("out", "relay.test")
    producer = Producer(redis_client, ProducerConfig(stream, high_water=1000))
    await producer.send(batch_of(2, 0))
    await producer.send_marked(batch_of(1, 2), [Mark(keys.cursor("marks", "m"), b"f", b"\0" * 8)])
    await redis_client.script_flush()
    before = await redis_client.info("commandstats")
    await producer.send(batch_of(3, 3), cursor=(cursor, "6"))
    await producer.send(batch_of(3, 6))
    marked = await producer.send_marked(
        batch_of(1, 9), [Mark(keys.cursor("marks", "m"), b"f", b"\0" * 7 + b"\2")]
    )
    after = await redis_client.info("commandstats")

    def calls(command: str) -> int:
        return int(after.get(f"cmdstat_{command}", {}).get("calls", 0)) - int(
            before.get(f"cmdstat_{command}", {}).get("calls", 0)
        )

    assert calls("script|exists") == 0
    assert calls("script|load") == 2  # the plain and the marked script, each once
    entries = await xrange(redis_client, stream)
    assert [e[1][b"n"] for e in entries] == [str(n).encode() for n in range(10)]
    assert marked[0] is not None and await redis_client.get(cursor) == b"6"
    assert producer.statistics().backlog == 10


def mark_value(version: int, flag: int, tag: bytes = b"") -> bytes:
    return ((version << 1) | flag).to_bytes(8, "big") + tag


OPAQUE = 1 << 62  # a version with its top bit set (once shifted): compared for equality only


async def test_a_mark_writes_news_and_a_stale_clear_from_another_source_is_skipped(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    """`Mark`'s rules, one slot through a sequence: (version, flag, tag) -> written, then stored."""
    keys = Keys(prefix)
    producer = Producer(redis_client, ProducerConfig(keys.stream("out"), high_water=None))
    slot = keys.cursor("marks", "m")
    steps = [
        ((5, 1, b"A"), True, (5, 1, b"A")),  # nothing stored
        ((5, 0, b"B"), False, (5, 1, b"A")),  # cleared by another source than the one that set it
        ((5, 1, b"B"), False, (5, 1, b"B")),  # set by another source: it takes the slot over
        ((5, 0, b"A"), False, (5, 1, b"B")),  # now A's clear is the stale one
        ((5, 1, b""), False, (5, 1, b"B")),  # the same, untagged: nothing changes hands
        ((5, 0, b"B"), True, (5, 0, b"B")),  # cleared by the source that set it
        ((5, 0, b"A"), False, (5, 0, b"B")),  # the same flag
        ((5, 1, b"A"), True, (5, 1, b"A")),  # set again: by any source
        ((5, 0, b""), True, (5, 0, b"")),  # an untagged clear is believed
        ((5, 1, b""), True, (5, 1, b"")),
        ((5, 0, b"B"), True, (5, 0, b"B")),  # a clear over an untagged set too
        ((4, 1, b"B"), False, (5, 0, b"B")),  # an older version
        ((6, 0, b"A"), True, (6, 0, b"A")),  # a newer one, whatever the flag and the tag
        ((OPAQUE | 7, 1, b""), True, (OPAQUE | 7, 1, b"")),  # opaque: different
        ((OPAQUE | 7, 1, b""), False, (OPAQUE | 7, 1, b"")),
        ((OPAQUE | 7, 0, b"A"), True, (OPAQUE | 7, 0, b"A")),
        ((OPAQUE | 7, 1, b"B"), True, (OPAQUE | 7, 1, b"B")),
        ((OPAQUE | 7, 0, b"A"), False, (OPAQUE | 7, 1, b"B")),
        ((6, 0, b"A"), True, (6, 0, b"A")),  # opaque to ordered: different
    ]
    seen = []
    for n, (value, _, _) in enumerate(steps):
        [entry_id] = await producer.send_marked(batch_of(1, n), [Mark(slot, b"f", mark_value(*value))])
        seen.append((entry_id is not None, await redis_client.hget(slot, "f")))
    assert seen == [(written, mark_value(*stored)) for _, written, stored in steps]
    assert await redis_client.xlen(keys.stream("out")) == sum(w for _, w, _ in steps)


async def test_skip_ahead_advances_after_n_failures_and_ledgers_the_range(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    cursor, ledger = keys.cursor("repo_backfill", "relay.test"), keys.ledger("repo_backfill", "relay.test")
    skip = SkipAhead(max_failures=3, step=1000)
    decisions = [skip.failed("4000") for _ in range(3)]
    assert [d.retry_same for d in decisions] == [True, True, False]
    final = decisions[-1]
    assert (final.skip_from, final.skip_to, final.failures) == ("4000", "5000", 3)
    await record_skip(redis_client, cursor, ledger, final, reason="HTTP 500 from relay")
    assert await redis_client.get(cursor) == b"5000"
    [recorded] = await skipped_ranges(redis_client, ledger)
    assert (recorded.start, recorded.end, recorded.failures) == ("4000", "5000", 3)
    assert "500" in recorded.reason
    # A success resets the count: failures must be consecutive.
    skip.failed("5000")
    skip.succeeded()
    assert skip.failed("5000").retry_same and skip.consecutive_failures == 1


def test_the_default_low_mark_lets_a_blocked_writer_resume() -> None:
    """90 % of the high mark, but never 0: a writer blocked at high_water=1 resumes once the
    backlog is drained, instead of waiting for a backlog below 0."""
    assert ProducerConfig("s", high_water=100_000).low == 90_000
    assert ProducerConfig("s", high_water=1).low == 1
    assert ProducerConfig("s", high_water=None).low == 0
