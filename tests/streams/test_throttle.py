"""The live-lag throttle: bulk producers pause above a lag, resume below a lower one (hysteresis),
and `dlq replay --rate` paces a replay; driven by unacknowledged live entries of known age."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import anyio
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY, generate_latest

from streams import (
    Keys,
    Pace,
    PartitionedProducer,
    Partitioning,
    ProducerConfig,
    Throttle,
    ThrottleConfig,
    throttled_states,
)
from streams._http import install_prometheus_provider
from streams.admin import dlq_replay
from tests._support import wait_until, xadd, xrange, xreadgroup

pytestmark = pytest.mark.anyio

# Wide thresholds: a reading between them stays between them for seconds on a busy machine.
PAUSE_S, RESUME_S = 20.0, 10.0


async def live_entry(redis: aioredis.Redis, stream: str, age_ms: int) -> str:
    """XADD a live entry whose id says it was written `age_ms` ago (ids must keep growing)."""
    seconds, micros = await redis.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    return (await xadd(redis, stream, {"n": "1"}, id=f"{now - age_ms}-0")).decode()


async def deliver_and_ack(redis: aioredis.Redis, stream: str, group: str) -> None:
    rows = await xreadgroup(redis, group, "indexer", {stream: ">"})
    ids = [i for _, entries in rows for i, _ in entries]
    if ids:
        await redis.xack(stream, group, *ids)


def throttle_for(redis: aioredis.Redis, keys: Keys, live: str) -> Throttle:
    return Throttle(
        redis,
        ThrottleConfig(
            watched=((live, ""),),
            pause_above_s=PAUSE_S,
            resume_below_s=RESUME_S,
            poll_interval_s=0.05,
            worker="backfiller-t",
            state_key=keys.throttle("backfiller-t"),
        ),
    )


async def test_throttle_pauses_above_and_resumes_only_below_the_lower_threshold(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    live = keys.stream("firehose_live")
    await live_entry(redis_client, live, 30_000)  # unread by the indexers' group: 30 s behind
    await redis_client.xgroup_create(live, "firehose_group", id="0")
    throttle = throttle_for(redis_client, keys, live)
    passed = anyio.Event()

    async def producer() -> None:
        await throttle.wait()
        passed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await wait_until(lambda: throttle.paused, what="paused at 30 s of live lag")
        [state] = await throttled_states(redis_client, keys.throttle_pattern())
        assert state["worker"] == "backfiller-t" and state["reason"] == "live_lag"
        out = cli(redis_url, prefix, "status")  # what an operator sees
        assert "throttled backfiller-t: live_lag" in out.stdout, out.stdout + out.stderr
        # The indexers catch up to an entry 15 s old: below the pause threshold, above the resume one.
        await deliver_and_ack(redis_client, live, "firehose_group")
        await live_entry(redis_client, live, 15_000)
        await wait_until(lambda: RESUME_S < throttle.statistics().lag_s < PAUSE_S, what="a reading of 15 s")
        assert throttle.paused and not passed.is_set()  # hysteresis: still paused
        await deliver_and_ack(redis_client, live, "firehose_group")
        await wait_until(passed.is_set, what="resumed once live lag is 0")
    stats = throttle.statistics()
    assert not stats.paused and stats.pauses == 1 and stats.throttled_s > 0
    assert await throttled_states(redis_client, keys.throttle_pattern()) == []


async def test_between_the_thresholds_writes_slow_down_without_pausing(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    live = keys.stream("firehose_live")
    await live_entry(redis_client, live, 15_000)
    await redis_client.xgroup_create(live, "firehose_group", id="0")
    throttle = throttle_for(redis_client, keys, live)
    await throttle.wait()
    stats = throttle.statistics()
    assert not stats.paused and stats.pauses == 0 and stats.throttled_s > 0
    await deliver_and_ack(redis_client, live, "firehose_group")


async def test_a_throttled_producer_writes_nothing_while_paused(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    live = keys.stream("firehose_live")
    await live_entry(redis_client, live, 30_000)
    await redis_client.xgroup_create(live, "firehose_group", id="0")
    throttle = throttle_for(redis_client, keys, live)
    target = keys.stream("firehose_backfill")
    producer = PartitionedProducer(
        redis_client, ProducerConfig(target), Partitioning(keys, {"firehose_backfill": 2}), throttle=throttle
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(producer.send, [{"did": f"did:plc:{i:024d}"} for i in range(10)])
        await wait_until(lambda: throttle.paused, what="the send met the throttle")
        assert sum([await redis_client.xlen(p) for p in producer.partitions]) == 0
        await deliver_and_ack(redis_client, live, "firehose_group")

        async def written() -> bool:
            return sum([await redis_client.xlen(p) for p in producer.partitions]) == 10

        await wait_until(written, what="the batch written once live caught up")


async def test_pace_spaces_takes_evenly() -> None:
    pace = Pace(50.0)
    started = time.monotonic()
    for _ in range(11):
        await pace.take()
    assert time.monotonic() - started >= 10 / 50  # the first goes at once, then one per 20 ms
    with pytest.raises(ValueError, match="positive"):
        Pace(0)


async def test_dlq_replay_counts_replay_metrics_and_waits_on_its_gate(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    install_prometheus_provider()
    keys = Keys(prefix)
    stream = keys.stream("s")
    for i in range(4):
        await redis_client.xadd(f"{stream}:dlq", {"event": f"e{i}", "reason": "boom", "attempts": "5"})
    gated = 0

    async def gate() -> None:
        nonlocal gated
        gated += 1

    assert await dlq_replay(redis_client, keys, stream, gate=gate) == 4
    assert gated == 4
    text = generate_latest(REGISTRY).decode()
    assert sample(text, "streamfill_replay_events_total", stream) == 4.0
    assert sample(text, "streamfill_replay_bytes_total", stream) == 4 * len("event" + "e0")


def sample(text: str, name: str, stream: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'stream="{stream}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} for {stream}")


def cli(redis_url: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_dlq_replay_rate_and_its_bad_values(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    stream = Keys(prefix).stream("s")
    for i in range(6):
        await redis_client.xadd(f"{stream}:dlq", {"event": f"e{i}", "reason": "boom"})
    started = time.monotonic()
    out = cli(redis_url, prefix, "dlq", "replay", "s", "--rate", "10/s")
    assert out.returncode == 0, out.stderr
    assert "replayed 6 entries" in out.stdout
    assert time.monotonic() - started >= 0.5  # six entries at 10/s: at least 5 intervals
    assert await redis_client.xlen(stream) == 6
    out = cli(redis_url, prefix, "dlq", "replay", "s", "--rate", "fast")
    assert out.returncode == 2 and "must be a rate N/s" in out.stderr and "Traceback" not in out.stderr
    audit = [json.loads(f[b"args"]) for _, f in await xrange(redis_client, Keys(prefix).audit())]
    assert audit[-1]["moved"] == 6


async def test_new_thresholds_apply_from_the_next_reading(redis_client: aioredis.Redis, prefix: str) -> None:
    """A live override (streamfill config set THROTTLE_*) retunes a paused throttle: it resumes
    once the lag is below the new resume threshold."""
    keys = Keys(prefix)
    live = keys.stream("firehose_live")
    await live_entry(redis_client, live, 30_000)
    await redis_client.xgroup_create(live, "firehose_group", id="0")
    throttle = throttle_for(redis_client, keys, live)
    async with anyio.create_task_group() as tg:
        tg.start_soon(throttle.wait)
        await wait_until(lambda: throttle.paused, what="paused at 30 s of live lag")
        throttle.retune(pause_above_s=120.0, resume_below_s=60.0)
        await wait_until(lambda: not throttle.paused, what="resumed under the new thresholds")
    await deliver_and_ack(redis_client, live, "firehose_group")
