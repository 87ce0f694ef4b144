"""Consumer: ack after success, poison -> DLQ after max_deliveries, reclaim after SIGKILL, SIGTERM drain."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from streams import (
    DONE,
    Backoff,
    Consumer,
    ConsumerConfig,
    DeadLetter,
    Entry,
    Keys,
    Outcome,
    Retry,
)
from tests._support import wait_until, xrange

pytestmark = pytest.mark.anyio
PROC = Path(__file__).with_name("consumer_proc.py")


async def fill(redis: aioredis.Redis, stream: str, n: int) -> list[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"n": str(i)})
        return [i.decode() for i in await pipe.execute()]


async def pending(redis: aioredis.Redis, stream: str, group: str) -> int:
    return int((await redis.xpending(stream, group))["pending"])


def config(stream: str, name: str = "c1", **kw: Any) -> ConsumerConfig:  # kw: ConsumerConfig fields
    base = ConsumerConfig(stream=stream, group="g", consumer=name, batch_size=10, concurrency=2, block_ms=50)
    return dataclasses.replace(base, **kw)


async def test_acks_every_entry_after_the_handler_succeeds(redis_client: aioredis.Redis, prefix: str) -> None:
    stream = Keys(prefix).stream("work")
    ids = await fill(redis_client, stream, 57)
    seen: list[str] = []

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        seen.extend(e.id for e in entries)
        return [DONE] * len(entries)

    consumer = Consumer(redis_client, config(stream), handler)
    await consumer.run_until_idle()
    assert sorted(seen) == sorted(ids)
    assert await pending(redis_client, stream, "g") == 0
    assert consumer.statistics().acked == 57


async def test_pending_entries_are_reread_first_after_restart(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    stream = Keys(prefix).stream("work")
    await fill(redis_client, stream, 5)
    await redis_client.xgroup_create(stream, "g", id="0")
    # A previous incarnation of c1 read everything and died before acking.
    await redis_client.xreadgroup("g", "c1", {stream: ">"}, count=5)
    got: list[Entry] = []

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        got.extend(entries)
        return [DONE] * len(entries)

    await Consumer(redis_client, config(stream), handler).run_until_idle()
    assert len(got) == 5
    assert all(e.deliveries == 2 for e in got), [e.deliveries for e in got]  # counts come from Redis
    assert await pending(redis_client, stream, "g") == 0


async def test_poison_entry_is_dead_lettered_after_max_deliveries_while_the_rest_flows(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    stream = Keys(prefix).stream("work")
    ids = await fill(redis_client, stream, 30)
    poison = ids[3]
    done: set[str] = set()
    attempts: list[int] = []
    others_done_while_poison_pending = False

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        nonlocal others_done_while_poison_pending
        out: list[Outcome] = []
        for e in entries:
            if e.id == poison:
                attempts.append(e.deliveries)
                out.append(Retry(error="ValueError: cannot parse"))
            else:
                done.add(e.id)
                out.append(DONE)
        if len(done) == 29 and len(attempts) < 4:
            others_done_while_poison_pending = True
        return out

    cfg = config(stream, max_deliveries=4, backoff=Backoff(base_s=0.01, cap_s=0.05))
    await Consumer(redis_client, cfg, handler).run_until_idle()
    assert attempts == [1, 2, 3, 4]
    assert others_done_while_poison_pending
    assert len(done) == 29
    dlq = await xrange(redis_client, f"{stream}:dlq")
    assert len(dlq) == 1
    fields = dlq[0][1]
    assert fields[b"n"] == b"3"  # original fields kept
    assert fields[b"attempts"] == b"4"
    assert b"max deliveries" in fields[b"reason"]
    assert b"cannot parse" in fields[b"error"]
    assert fields[b"consumer"] == b"c1" and fields[b"source_id"] == poison.encode()
    assert float(fields[b"failed_at"]) > 0
    assert await pending(redis_client, stream, "g") == 0


async def test_permanent_error_dead_letters_at_once(redis_client: aioredis.Redis, prefix: str) -> None:
    stream = Keys(prefix).stream("work")
    await fill(redis_client, stream, 3)

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        return [
            DeadLetter(reason="bad-input", error="no did") if e.fields[b"n"] == b"1" else DONE
            for e in entries
        ]

    await Consumer(redis_client, config(stream), handler).run_until_idle()
    dlq = await xrange(redis_client, f"{stream}:dlq")
    assert [(f[b"n"], f[b"reason"], f[b"attempts"]) for _, f in dlq] == [(b"1", b"bad-input", b"1")]
    assert await pending(redis_client, stream, "g") == 0


async def test_handler_exception_is_classified_not_fatal(redis_client: aioredis.Redis, prefix: str) -> None:
    stream = Keys(prefix).stream("work")
    await fill(redis_client, stream, 4)
    calls = 0

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database went away")  # transient: the batch is retried
        return [DONE] * len(entries)

    cfg = config(stream, backoff=Backoff(base_s=0.01, cap_s=0.02))
    consumer = Consumer(redis_client, cfg, handler)
    await consumer.run_until_idle()
    assert calls >= 2
    assert consumer.statistics().acked == 4
    assert await redis_client.xlen(f"{stream}:dlq") == 0


async def test_killed_consumer_entries_are_reclaimed_and_all_processed(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    stream = Keys(prefix).stream("work")
    ids = await fill(redis_client, stream, 40)
    proc = subprocess.Popen([sys.executable, str(PROC), redis_url, stream, "g", "victim", "hang"])
    try:
        await wait_until(lambda: redis_client.llen(f"{stream}:started"), what="victim mid-batch")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert await pending(redis_client, stream, "g") > 0  # the victim died holding entries
    done: set[str] = set()
    deliveries: dict[str, int] = {}

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        for e in entries:
            done.add(e.id)
            deliveries[e.id] = e.deliveries
        return [DONE] * len(entries)

    rescuer = Consumer(
        redis_client, config(stream, "rescuer", min_idle_ms=300, reclaim_interval_s=0.1), handler
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(rescuer.run)
        await wait_until(lambda: len(done) == 40, what="every entry processed")
        rescuer.stop()
    assert done == set(ids)
    assert rescuer.statistics().reclaimed > 0
    assert any(d >= 2 for d in deliveries.values())  # reclaimed entries carry Redis' delivery count
    assert await pending(redis_client, stream, "g") == 0


async def test_long_handler_keeps_its_lease(redis_client: aioredis.Redis, prefix: str) -> None:
    stream = Keys(prefix).stream("work")
    await fill(redis_client, stream, 3)
    release = anyio.Event()
    started = anyio.Event()
    stolen: list[str] = []

    async def slow(entries: Sequence[Entry]) -> Sequence[Outcome]:
        started.set()
        await release.wait()
        return [DONE] * len(entries)

    async def thief_handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        stolen.extend(e.id for e in entries)
        return [DONE] * len(entries)

    owner = Consumer(redis_client, config(stream, "owner", min_idle_ms=300), slow)
    thief = Consumer(
        redis_client, config(stream, "thief", min_idle_ms=300, reclaim_interval_s=0.05), thief_handler
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(owner.run)
        await started.wait()
        tg.start_soon(thief.run)
        # Time passing is what is tested here: the owner works for 4x min_idle while the thief
        # sweeps every 50 ms; the lease renewals must keep every entry with the owner.
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.2:
            rows = await redis_client.xpending_range(stream, "g", "-", "+", 10)
            assert len(rows) == 3 and all(r["consumer"] == b"owner" for r in rows), rows
            await anyio.sleep(0.05)
        release.set()
        await wait_until(lambda: owner.statistics().acked == 3)
        owner.stop()
        thief.stop()
    assert stolen == []
    assert thief.statistics().reclaimed == 0


async def test_uncounted_retries_never_exhaust_deliveries(redis_client: aioredis.Redis, prefix: str) -> None:
    stream = Keys(prefix).stream("work")
    await fill(redis_client, stream, 3)
    calls = 0
    counts: list[int] = []

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        nonlocal calls
        calls += 1
        counts.extend(e.deliveries for e in entries)
        if calls <= 6:  # the database is down for six attempts, more than max_deliveries
            return [Retry(error="connection refused", counted=False)] * len(entries)
        return [DONE] * len(entries)

    cfg = config(stream, max_deliveries=2, backoff=Backoff(base_s=0.005, cap_s=0.02))
    consumer = Consumer(redis_client, cfg, handler)
    await consumer.run_until_idle()
    assert consumer.statistics().acked == 3
    assert await redis_client.xlen(f"{stream}:dlq") == 0
    assert set(counts) == {1}  # Redis' delivery count was kept, not bumped, by those retries


def test_a_consumer_that_could_never_read_is_refused() -> None:
    for field in ("concurrency", "batch_size", "max_deliveries"):
        with pytest.raises(ValueError, match=f"{field} must be at least 1"):
            config("s", "c1", **{field: 0})


async def test_stop_while_every_handler_slot_is_busy_reads_nothing_more(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    """The reader waits for a free slot; stop() ends that wait at once (the handlers still finish)."""
    stream = Keys(prefix).stream("busy")
    await fill(redis_client, stream, 1)
    started, release = anyio.Event(), anyio.Event()

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        started.set()
        await release.wait()
        return [DONE] * len(entries)

    consumer = Consumer(redis_client, config(stream, batch_size=1, concurrency=1), handler)
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await started.wait()
        await fill(redis_client, stream, 1)  # would be read as soon as the slot is free
        consumer.stop()
        release.set()
    info = {g["name"]: g for g in await redis_client.xinfo_groups(stream)}[b"g"]
    assert (info["pending"], info["lag"]) == (0, 1)  # the in-flight entry acked, the new one unread


async def test_a_short_read_lingers_so_what_trickles_in_meanwhile_comes_as_one_batch(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    """linger_ms: after a read that filled less than a batch the reader waits (stop() cuts the
    wait short), so entries added one by one meanwhile are read together, not one read each."""
    stream = Keys(prefix).stream("trickle")
    await fill(redis_client, stream, 1)
    batches: list[int] = []
    first, second = anyio.Event(), anyio.Event()

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        batches.append(len(entries))
        (second if first.is_set() else first).set()
        return [DONE] * len(entries)

    consumer = Consumer(redis_client, config(stream, block_ms=5000, linger_ms=60_000), handler)
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await first.wait()
        for _ in range(5):  # one XADD at a time: a reader blocked in XREADGROUP would get the first alone
            await fill(redis_client, stream, 1)
        started = time.monotonic()
        consumer.stop()  # ends the linger: the reader stops without reading the five
    assert time.monotonic() - started < 30
    assert batches == [1] and await pending(redis_client, stream, "g") == 0
    # Without a stop: the linger runs out and what came meanwhile is one read.
    stream = Keys(prefix).stream("trickle2")
    await fill(redis_client, stream, 1)
    batches.clear()
    first, second = anyio.Event(), anyio.Event()
    consumer = Consumer(redis_client, config(stream, block_ms=5000, linger_ms=3000), handler)
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await first.wait()
        for _ in range(5):
            await fill(redis_client, stream, 1)
        await second.wait()
        consumer.stop()
    assert batches == [1, 5]


async def test_full_reads_do_not_linger(redis_client: aioredis.Redis, prefix: str) -> None:
    stream = Keys(prefix).stream("backlog")
    await fill(redis_client, stream, 30)
    seen: list[int] = []
    done = anyio.Event()

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        seen.append(len(entries))
        if sum(seen) == 30:
            done.set()
        return [DONE] * len(entries)

    consumer = Consumer(redis_client, config(stream, linger_ms=60_000), handler)
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await done.wait()
        consumer.stop()
    assert seen == [10, 10, 10] and time.monotonic() - started < 30
