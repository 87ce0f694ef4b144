"""Live overrides and heartbeats (workers/control) against a real Redis and real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import anyio
import pytest
import redis.asyncio as aioredis

from streams import DONE, Consumer, ConsumerConfig, Entry, Keys, Outcome, Producer, ProducerConfig
from tests._support import as_redis, wait_until, xrange
from workers.backfiller.config import SPEC as BACKFILLER
from workers.backfiller.config import BackfillerConfig
from workers.cli import main
from workers.control import Agent, LiveSettings, OverrideStore, heartbeats

pytestmark = pytest.mark.anyio


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str) -> dict[str, str]:
    env = {"REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix, "STREAMFILL_OPERATOR": "alice"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


async def _cli(*argv: str) -> int:
    """`streamfill ARGV` in this process (in a thread: the command runs its own event loop)."""
    return await anyio.to_thread.run_sync(main, list(argv))


async def _audit(redis: aioredis.Redis, prefix: str) -> list[tuple[str, dict[str, object]]]:
    rows = await xrange(redis, Keys(prefix).audit())
    return [(f[b"action"].decode(), json.loads(f[b"args"])) for _, f in rows]


async def test_an_override_reaches_a_running_worker_within_2s_and_ends_by_itself(
    redis_client: aioredis.Redis, prefix: str, cli_env: dict[str, str]
) -> None:
    live = LiveSettings.fixed(BACKFILLER, BackfillerConfig(prefix=prefix, concurrency=8))
    seen: list[int] = []
    live.on_change(lambda c: seen.append(c.concurrency))
    agent = Agent(redis_client, live, kind="backfiller", name="b-1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        assert await _cli("config", "set", "BACKFILLER_CONCURRENCY=3", "--for", "5s", "--reason", "t") == 0
        started = time.monotonic()
        await wait_until(lambda: live.config.concurrency == 3, timeout=2.0, what="override applied")
        print(f"applied after {time.monotonic() - started:.2f}s")
        assert live.resolved.values["concurrency"].source == "override"
        # Nobody reverts: the window ends in Redis time and the worker falls back by itself.
        await wait_until(lambda: live.config.concurrency == 8, timeout=10, what="fell back at expiry")
        tg.cancel_scope.cancel()
    assert seen == [3, 8]
    actions = await _audit(redis_client, prefix)
    assert [a for a, _ in actions] == ["config.set", "config.expire"]
    assert actions[0][1]["name"] == "BACKFILLER_CONCURRENCY" and actions[0][1]["set_by"] == "alice"
    assert await redis_client.hlen(Keys(prefix).overrides()) == 0


async def test_a_worker_started_during_a_window_applies_it_and_revert_ends_it(
    redis_client: aioredis.Redis, prefix: str, cli_env: dict[str, str]
) -> None:
    store = OverrideStore(redis_client, Keys(prefix))
    await store.set({"BACKFILLER_PDS_RPS": "2.5"}, 60, reason="slow PDS", operator="bob")
    live = LiveSettings.fixed(BACKFILLER, BackfillerConfig(prefix=prefix))
    agent = Agent(redis_client, live, kind="backfiller", name="b-2")
    await agent.start()
    assert live.config.pds_rps == 2.5
    assert await _cli("config", "revert", "--all") == 0
    await live.refresh(store)
    assert live.config.pds_rps == BackfillerConfig().pds_rps
    assert [a for a, _ in await _audit(redis_client, prefix)] == ["config.set", "config.revert"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["NO_SUCH_SETTING=1", "--for", "1m"], "NO_SUCH_SETTING is not a streamfill setting"),
        (["BACKFILLER_CONCURENCY=4", "--for", "1m"], "did you mean BACKFILLER_CONCURRENCY?"),
        (["BACKFILLER_CONCURRENCY=0", "--for", "1m"], "BACKFILLER_CONCURRENCY must be an integer from 1"),
        (["BACKFILLER_CONCURRENCY=lots", "--for", "1m"], "must be an integer"),
        (["BACKFILLER_CONCURRENCY=4", "--for", "soon"], "not a duration"),
        (["BACKFILLER_CONCURRENCY=4", "--for", "2s"], "--for must be from 5s to 7d"),
        (["BACKFILLER_CONCURRENCY=4", "--for", "8d"], "--for must be from 5s to 7d"),
        (["BACKFILLER_PLC_URL=x", "--for", "1m"], "not a streamfill setting"),
        (["PLC_URL=http://x", "--for", "1m"], "cannot be changed while workers run"),
        (
            ["INGESTER_HIGH_WATER_MARK=100", "INGESTER_LOW_WATER_MARK=500", "--for", "1m"],
            "INGESTER_LOW_WATER_MARK=500 must be below INGESTER_HIGH_WATER_MARK=100",
        ),
        # Valid alone, but it would put the high mark under the low one an active override set.
        (["INGESTER_LOW_WATER_MARK=5000", "--for", "1m"], "must be below INGESTER_HIGH_WATER_MARK=1000"),
    ],
)
async def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    redis_client: aioredis.Redis,
    prefix: str,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    store = OverrideStore(redis_client, Keys(prefix))
    await store.set({"INGESTER_HIGH_WATER_MARK": "1000"}, 60, reason="before", operator="x")
    before = await redis_client.hgetall(Keys(prefix).overrides())
    audited = len(await _audit(redis_client, prefix))
    capsys.readouterr()
    assert await _cli("config", "set", *argv, "--reason", "test") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert await redis_client.hgetall(Keys(prefix).overrides()) == before
    assert len(await _audit(redis_client, prefix)) == audited


def test_for_is_required(redis_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url}
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "config", "set", "INDEXER_BATCH_SIZE=10", "--reason", "r"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "--for" in out.stderr


async def test_a_resized_consumer_runs_more_handlers_at_once(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    """A live concurrency change reaches the consumer: more batches in flight, then fewer."""
    stream = Keys(prefix).stream("work")
    await Producer(redis_client, ProducerConfig(stream, high_water=None)).send(
        [{"n": str(i)} for i in range(40)]
    )
    running, peak, gate = [0], [0], anyio.Event()

    async def handler(entries: Sequence[Entry]) -> list[Outcome]:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await gate.wait()
        running[0] -= 1
        return [DONE] * len(entries)

    config = ConsumerConfig(stream, "g", "c", batch_size=1, concurrency=2, block_ms=100)
    consumer = Consumer(redis_client, config, handler)
    async with anyio.create_task_group() as tg:
        await tg.start(consumer.run)
        await wait_until(lambda: running[0] == 2, what="two handlers busy")
        consumer.retune(concurrency=5)
        await wait_until(lambda: running[0] == 5, what="five handlers busy after the resize")
        consumer.retune(concurrency=1)
        gate.set()
        await wait_until(lambda: consumer.statistics().acked == 40, what="all acked")
        consumer.stop()
    assert peak[0] == 5


async def test_workers_lists_a_running_worker_until_it_is_killed(
    redis_client: aioredis.Redis, prefix: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**os.environ, **cli_env, "BACKFILLER_CONSUMER": "bf-under-test", "BACKFILLER_CONCURRENCY": "4"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "backfiller"], env=env, stderr=subprocess.DEVNULL
    )
    keys = Keys(prefix)
    try:
        beats = await wait_until(lambda: heartbeats(redis_client, keys), timeout=60, what="a heartbeat")
        [beat] = beats
        assert (beat["kind"], beat["name"], beat["pid"]) == ("backfiller", "bf-under-test", proc.pid)
        assert beat["settings"]["BACKFILLER_CONCURRENCY"] == {"value": "4", "source": "env"}
        assert beat["settings"]["BACKFILLER_PDS_RPS"]["source"] == "default"
        assert beat["statistics"]["consumer"]["consumer"] == "bf-under-test"
        assert beat["statistics"]["concurrency"] == 4
        assert await _cli("config", "set", "BACKFILLER_CONCURRENCY=6", "--for", "1m", "--reason", "r") == 0

        async def overridden() -> bool:
            [b] = await heartbeats(redis_client, keys)
            # The setting's value, and the consumer's own limit: the component uses it.
            setting = b["settings"]["BACKFILLER_CONCURRENCY"] == {"value": "6", "source": "override"}
            return bool(setting and b["statistics"]["concurrency"] == 6)

        await wait_until(overridden, timeout=10, what="the heartbeat shows the override")
        capsys.readouterr()
        assert await _cli("workers") == 0
        assert "bf-under-test" in capsys.readouterr().out
        assert await _cli("status") == 0
        assert "workers backfiller: 1 running, overrides BACKFILLER_CONCURRENCY=6" in capsys.readouterr().out
        assert await _cli("status", "--json") == 0
        report = json.loads(capsys.readouterr().out)
        [beat] = [w for w in report["workers"] if w["kind"] == "backfiller"]
        assert beat["settings"]["BACKFILLER_CONCURRENCY"] == {"value": "6", "source": "override"}
        assert set(report) == {"at", "streams", "ledgers", "campaigns", "throttled", "workers", "readiness"}
        proc.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(lambda: proc.wait(30))
        killed = time.monotonic()
        await wait_until(lambda: _none(redis_client, keys), timeout=15, what="the heartbeat expired")
        print(f"heartbeat gone {time.monotonic() - killed:.1f}s after SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


async def _none(redis: aioredis.Redis, keys: Keys) -> bool:
    return not await heartbeats(redis, keys)


async def test_a_worker_refuses_an_override_its_own_settings_make_invalid(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    """Checked against the operator's environment, the low mark is fine; this worker's high mark
    is lower: it keeps its configured values and says why in its heartbeat."""
    store = OverrideStore(redis_client, Keys(prefix))
    live = LiveSettings.fixed(BACKFILLER, BackfillerConfig(prefix=prefix, firehose_high_water=100))
    agent = Agent(redis_client, live, kind="backfiller", name="b-3")
    await store.set({"BACKFILLER_FIREHOSE_STREAM_LOW_WATER_MARK": "500"}, 60, reason="r", operator="o")
    await agent.start()
    assert live.config.firehose_low_water is None and live.applied == {}
    assert "must be below BACKFILLER_FIREHOSE_STREAM_HIGH_WATER_MARK=100" in live.refused
    await agent.beat()
    [beat] = await heartbeats(redis_client, Keys(prefix))
    assert beat["refused"] == live.refused and beat["overrides"] == {}
    await store.set({"BACKFILLER_FIREHOSE_STREAM_HIGH_WATER_MARK": "1000"}, 60, reason="r", operator="o")
    await live.refresh(store)  # together they are valid here too
    config = live.config  # refreshed: not the one asserted on above
    assert (config.firehose_low_water, config.firehose_high_water) == (500, 1000)
    assert live.refused == ""


async def test_show_and_history(
    redis_client: aioredis.Redis, prefix: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _cli("config", "set", "INDEXER_BATCH_SIZE=50", "--for", "10m", "--reason", "slow db") == 0
    assert await _cli("config", "set", "RUST_LOG=debug", "--for", "1h", "--reason", "trace") == 0
    capsys.readouterr()
    assert await _cli("config", "show", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    left = {o["name"]: o["left_s"] for o in doc["overrides"]}
    assert set(left) == {"INDEXER_BATCH_SIZE", "STREAMFILL_LOG_LEVEL"}  # an alias is stored by its name
    assert 590 < left["INDEXER_BATCH_SIZE"] <= 600
    indexer = doc["effective"]["indexer"]
    assert indexer["INDEXER_BATCH_SIZE"] == {"value": "50", "source": "override", "live": True}
    assert indexer["INDEXER_MODE"] == {"value": "all", "source": "default", "live": False}
    assert doc["effective"]["backfiller"]["BACKFILLER_PDS_RPS"]["source"] == "default"
    assert await _cli("config", "show") == 0
    assert "INDEXER_BATCH_SIZE=50" in capsys.readouterr().out
    assert await _cli("config", "revert", "INDEXER_BATCH_SIZE") == 0
    assert await _cli("config", "revert", "INDEXER_BATCH_SIZE") == 0  # nothing left to revert: said so
    assert "no such override is active" in capsys.readouterr().out
    # A window that ended while no worker ran: history expires (and audits) it first.
    ended = {"value": "3", "set_ms": 1, "until_ms": 2, "operator": "bob", "reason": "old"}
    await redis_client.hset(Keys(prefix).overrides(), "BACKFILLER_PDS_RPS", json.dumps(ended))
    assert await _cli("config", "history", "--json") == 0
    history = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(h["action"], h["args"]["name"], h["operator"]) for h in history] == [
        ("config.set", "INDEXER_BATCH_SIZE", "alice"),
        ("config.set", "STREAMFILL_LOG_LEVEL", "alice"),
        ("config.revert", "INDEXER_BATCH_SIZE", "alice"),
        ("config.expire", "BACKFILLER_PDS_RPS", "alice"),
    ]
    assert history[-1]["args"]["set_by"] == "bob"
    assert await _cli("config", "revert") == 2  # neither names nor --all


async def test_the_backfiller_components_take_every_live_setting(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    from workers.backfiller.worker import build_backfiller

    config = BackfillerConfig(prefix=prefix, plc_url="http://127.0.0.1:9")
    live = LiveSettings.fixed(BACKFILLER, config)
    store = OverrideStore(redis_client, Keys(prefix))
    overrides = {
        "BACKFILLER_CONCURRENCY": "3",
        "BACKFILLER_FIREHOSE_STREAM_HIGH_WATER_MARK": "5000",
        "BACKFILLER_FIREHOSE_STREAM_LOW_WATER_MARK": "4000",
        "BACKFILLER_PDS_RPS": "0.5",
        "BACKFILLER_PDS_CONCURRENCY": "2",
        "THROTTLE_LIVE_LAG_S": "30",
        "THROTTLE_RESUME_LAG_S": "20",
    }
    async with build_backfiller(redis_client, live.config) as worker:
        live.on_change(worker.retune)
        await store.set(overrides, 60, reason="r", operator="o")
        assert await live.refresh(store)
        assert worker.consumer.config.concurrency == 3
        assert all(c.config.concurrency == 3 for c in worker.consumer.consumers)
        assert worker.handler.concurrency == 3  # the repos of a read run under the same limit
        assert (worker.producer.config.high_water, worker.producer.config.low_water) == (5000, 4000)
        assert worker.limiter.limits == (0.5, 2)
        assert worker.throttle is not None
        assert (worker.throttle.config.pause_above_s, worker.throttle.config.resume_below_s) == (30, 20)
        await store.revert([])
        assert await live.refresh(store)
        assert worker.consumer.config.concurrency == config.concurrency
        assert worker.handler.concurrency == config.concurrency
        assert worker.throttle.config.pause_above_s == config.throttle_live_lag_s


async def test_the_ingester_and_indexer_components_take_their_live_settings(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    from tests.workers._pipeline import ingester_config
    from workers.indexer.config import SPEC as INDEXER
    from workers.indexer.config import IndexerConfig
    from workers.indexer.handler import IndexerHandler
    from workers.indexer.worker import Indexer, build_consumers
    from workers.ingester.config import SPEC as INGESTER
    from workers.ingester.worker import build_ingester

    store = OverrideStore(redis_client, Keys(prefix))
    overrides = {
        "INGESTER_HIGH_WATER_MARK": "700",
        "INGESTER_LOW_WATER_MARK": "600",
        "THROTTLE_LIVE_LAG_S": "9",
        "INDEXER_BATCH_SIZE": "7",
        "INDEXER_CONCURRENCY": "5",
    }
    await store.set(overrides, 60, reason="r", operator="o")
    config = ingester_config(redis_url, prefix, "http://127.0.0.1:9", mode="all")
    ingest = LiveSettings.fixed(INGESTER, config)
    async with build_ingester(redis_client, config) as ingester:
        ingest.on_change(ingester.retune)
        assert await ingest.refresh(store), ingest.refused
        assert ingester.producers and all(
            (p.config.high_water, p.config.low_water) == (700, 600) for p in ingester.producers
        )
        assert ingester.throttle is not None and ingester.throttle.config.pause_above_s == 9
    index = LiveSettings.fixed(INDEXER, IndexerConfig(prefix=prefix))
    handler = IndexerHandler(pool=None)  # never called: the test retunes the consumers only
    indexer = Indexer(build_consumers(redis_client, index.config, handler), handler, None)
    index.on_change(indexer.retune)
    assert await index.refresh(store)
    for consumer in indexer.consumers:
        assert (consumer.config.batch_size, consumer.config.concurrency) == (7, 5)
        assert all((c.config.batch_size, c.config.concurrency) == (7, 5) for c in consumer.consumers)


async def test_overrides_and_heartbeats_on_a_redis_cluster(redis_cluster_url: str, prefix: str) -> None:
    """TIME cannot be pipelined on a cluster: the overrides are read by a script on the hash's node."""
    from streams import connect

    client = connect(redis_cluster_url, cluster=True)
    try:
        store = OverrideStore(as_redis(client), Keys(prefix))
        live = LiveSettings.fixed(BACKFILLER, BackfillerConfig(prefix=prefix))
        agent = Agent(as_redis(client), live, kind="backfiller", name="b-cluster")
        await store.set({"BACKFILLER_PDS_RPS": "3"}, 5, reason="r", operator="o")
        await agent.start()
        assert live.config.pds_rps == 3
        await agent.beat()
        [beat] = await heartbeats(as_redis(client), Keys(prefix))
        assert beat["overrides"] == {"BACKFILLER_PDS_RPS": "3"}
        await wait_until(lambda: live.refresh(store), timeout=10, what="the window ended")
        assert live.config.pds_rps == BackfillerConfig().pds_rps
        rows = await xrange(client, Keys(prefix).audit())
        assert [f[b"action"] for _, f in rows] == [b"config.set", b"config.expire"]
    finally:
        await client.aclose()
