"""The replayer as operators run it: separate processes, replicas, SIGKILL and restart, `run`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import socket
from pathlib import Path

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from streams import Keys
from tests._support import wait_until
from tests.replayer._es_server import FakeElasticsearch
from tests.replayer._files import sample_log, write_capture
from tests.replayer.conftest import run_cli, start_cli
from workers._env import redis_session
from workers.replayer.cli import run_scan
from workers.replayer.config import ReplayerConfig
from workers.replayer.ledger import Ledger
from workers.replayer.scan import SCAN_BATCH
from workers.replayer.service import build_indexing, build_scanning, elastic

pytestmark = pytest.mark.anyio


def _completed_files(config: ReplayerConfig) -> int:
    ledger = Ledger(config.ledger_path)
    try:
        return ledger.totals()["completed_files"]
    finally:
        ledger.close()


async def test_several_index_replicas_share_the_work(
    config: ReplayerConfig, es: FakeElasticsearch, root: Path
) -> None:
    expected = sample_log(root, captures=120, reflections=30)
    config = dataclasses.replace(config, bulk_max_docs=10)
    es.slow(0.02)  # so that one replica cannot take everything before the other reads
    assert await run_scan(config, argparse.Namespace(every=None)) == 0

    async with redis_session(config.redis_url) as redis, elastic(config) as client:
        replicas = [
            build_indexing(redis, dataclasses.replace(config, consumer=f"replayer-{n}"), client)
            for n in range(2)
        ]
        async with anyio.create_task_group() as tg:
            for replica in replicas:
                await tg.start(replica.consumer.run)
            await wait_until(lambda: es.count() == len(expected), timeout=60, what="all documents indexed")
            for replica in replicas:
                replica.consumer.stop()
    shares = [r.handler.statistics().indexed for r in replicas]
    assert sum(shares) == len(expected) and min(shares) > 0, shares
    assert all(es.version(i, d) == 1 for i, d in expected)

    # The next scan folds the replicas' results into the ledger: everything is done, nothing sent.
    assert await run_scan(config, argparse.Namespace(every=None)) == 0
    assert _completed_files(config) == len(expected)


async def test_a_replay_killed_in_the_middle_resumes_from_the_ledger_and_finishes(
    config: ReplayerConfig, es: FakeElasticsearch, root: Path
) -> None:
    expected = sample_log(root, captures=150, reflections=50)
    config = dataclasses.replace(config, bulk_max_docs=5)
    es.slow(0.05)
    proc = start_cli(config, "run-once", "--timeout", "120")
    try:
        await wait_until(lambda: es.count() >= 30, timeout=60, what="part of the replay done")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = es.count()
    assert 30 <= partial < len(expected)

    es.slow(0)
    done = run_cli(config, "run-once", "--timeout", "120", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert es.count() == len(expected)
    assert all(es.doc(i, d) is not None for i, d in expected)
    assert _completed_files(config) == len(expected)
    status = run_cli(config, "status", "--summary", "--json")
    report = json.loads(status.stdout)
    assert report["totals"]["inflight_files"] == 0 and report["totals"]["failed_files"] == 0
    # The killed run had enqueued everything: it completes when the restarted one folds its results.
    assert [r["status"] for r in report["runs"]] == ["completed", "completed"]
    assert sum(r["indexed_count"] for r in report["runs"]) >= len(expected)


async def test_run_waits_for_elasticsearch_then_replays_periodically_and_stops_on_sigterm(
    config: ReplayerConfig, es: FakeElasticsearch, root: Path, tmp_path: Path
) -> None:
    expected = sample_log(root, captures=10, reflections=5)
    es.down()
    log = tmp_path / "run.log"
    port = _free_port()
    proc = start_cli(config, "run", REPLAYER_INTERVAL="0.5", METRICS_PORT=str(port), stderr=log)
    try:
        await wait_until(
            lambda: "waiting for elasticsearch" in log.read_text(),
            timeout=30,
            what="the run process waits for elasticsearch",
        )
        assert proc.poll() is None and es.count() == 0
        es.up()
        await wait_until(lambda: es.count() == len(expected), timeout=60, what="start-up pass indexed")
        write_capture(root, "late", "2026-02-25T10:00:00Z")
        await wait_until(
            lambda: es.doc("agent-captains-captures-2026-02-25", "late") is not None,
            timeout=60,
            what="a periodic pass indexed a new file",
        )
        stream = Keys(config.prefix).stream(config.stream)

        async def metrics_text() -> str:
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
            # Stream gauges come from the worker's stats poller (every 5 s).
            return text if "streamfill_stream_length{" in text and stream in text else ""

        metrics = await wait_until(metrics_text, timeout=30, what="stream gauges on /metrics")
        indexed = [ln for ln in metrics.splitlines() if ln.startswith("streamfill_replayer_indexed_count")]
        assert indexed and float(indexed[0].split()[-1]) >= len(expected), indexed
        assert "streamfill_replayer_files_scanned" in metrics
        assert "streamfill_replayer_run_duration" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "elasticsearch answers" in text
    logged = {json.loads(line).get("event") for line in text.splitlines() if line.startswith("{")}
    assert {
        "captains_log_backfill_started",
        "captains_log_backfill_completed",
        "captains_log_backfill_checkpoint_updated",
    } <= logged


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_scan_blocks_at_the_high_water_mark_and_resumes_as_the_index_role_drains(
    config: ReplayerConfig, es: FakeElasticsearch, root: Path, redis_client: aioredis.Redis
) -> None:
    expected = sample_log(root, captures=SCAN_BATCH * 3, reflections=0)
    config = dataclasses.replace(config, high_water=50)
    stream = Keys(config.prefix).stream(config.stream)
    async with redis_session(config.redis_url) as redis, elastic(config) as client:
        ledger = Ledger(config.ledger_path)
        scanning = build_scanning(redis, config, ledger)
        indexing = build_indexing(redis, config, client)
        async with anyio.create_task_group() as tg:
            await tg.start(scanning.folder_consumer.run)
            tg.start_soon(scanning.scanner.scan_pass)
            await wait_until(lambda: scanning.producer.statistics().blocked, what="the scan blocked")
            # Blocked after its first batch: never dropping, never running ahead.
            assert await redis_client.xlen(stream) == SCAN_BATCH
            await tg.start(indexing.consumer.run)
            await wait_until(lambda: es.count() == len(expected), timeout=60, what="everything indexed")
            await wait_until(lambda: ledger.inflight_count() == 0, what="results folded")
            indexing.consumer.stop()
            scanning.folder_consumer.stop()
        ledger.close()
    assert scanning.producer.statistics().waits >= 2
