"""Every worker started with its smallest allowed settings (each bounded setting at its minimum:
one handler slot, batches of one, a high-water mark of one, the shortest grace period) does its
work, and exits 0 on one SIGTERM within its grace period, whatever it is waiting on then."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from devnet import Devnet, DevnetConfig
from schemas import RepoJob, encode_entry
from streams import Keys
from tests._support import wait_until, xadd
from tests.indexer._events import LIVE, POST, body, create, entry, tid
from tests.replayer._es_server import FakeElasticsearch
from tests.replayer._files import sample_log
from workers.backfiller.config import SPEC as BACKFILLER
from workers.indexer.config import SPEC as INDEXER
from workers.ingester.config import SPEC as INGESTER
from workers.replayer.config import SPEC as REPLAYER
from workers.settings import INT, Spec

pytestmark = pytest.mark.anyio

GRACE_S = 5.0  # STREAMFILL_GRACE_SECS at its minimum
EXIT_SLACK_S = 10.0  # a process' own teardown on a loaded machine


def smallest(spec: Spec[Any]) -> dict[str, str]:
    """Every bounded setting of `spec` at its minimum (optional ones keep their defaults)."""
    env = {}
    for s in spec.settings:
        if s.minimum is not None and not s.optional:
            env[s.env] = str(int(s.minimum)) if s.kind is INT else str(s.minimum)
    assert float(env["STREAMFILL_GRACE_SECS"]) == GRACE_S
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"http://127.0.0.1:{port}/readyz", timeout=5)).status_code == 200
    except httpx.HTTPError:
        return False


async def stop_within_grace(
    tmp_path: Path, argv: list[str], env: dict[str, str], busy: Callable[[], Awaitable[bool]], what: str
) -> None:
    """Start the worker, wait until it is ready and `busy`, SIGTERM it once, and time its exit."""
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFILL_", "REPLAYER_", "ES_"))}
    log = tmp_path / f"{argv[0]}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *argv],
            env={**clean, **env, "METRICS_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        await wait_until(lambda: proc.poll() is not None or _ready(port), timeout=90, what=f"{argv} ready")
        assert proc.poll() is None, log.read_text()[-3000:]
        await wait_until(busy, timeout=90, what=what)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(lambda: proc.wait(GRACE_S + 60))
        elapsed = time.monotonic() - signalled
    finally:
        proc.kill()
    assert code == 0, log.read_text()[-3000:]
    assert elapsed < GRACE_S + EXIT_SLACK_S, f"{argv} took {elapsed:.1f}s to exit after SIGTERM"


async def test_ingester(tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=30, seed=11, firehose_rate=20.0)) as net:
        env = smallest(INGESTER) | {
            "REDIS_URL": redis_url,
            "STREAMFILL_PREFIX": prefix,
            "INGESTER_RELAY_HOSTS": net.relay_url,
            "INGESTER_LABELER_HOSTS": net.labeler_url,
            "PLC_URL": net.plc_url,
        }

        async def blocked() -> bool:  # at the high-water mark of one: the next write waits
            return bool(await redis_client.xlen(keys.stream("repo_backfill")))

        await stop_within_grace(tmp_path, ["ingester"], env, blocked, "a listing page written")


@pytest.mark.leaves_pending("stopped mid-job: the job stays pending for reclaim")
async def test_backfiller(tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=5, seed=12)) as net:
        for repo in [t for t in net.truth() if t["type"] == "repo"][:3]:
            job = RepoJob(did=repo["did"], host=net.relay_url)
            await xadd(redis_client, keys.stream("repo_backfill"), encode_entry("repo_backfill", job))
        env = smallest(BACKFILLER) | {
            "REDIS_URL": redis_url,
            "STREAMFILL_PREFIX": prefix,
            "PLC_URL": net.plc_url,
            "STREAMFILL_ALLOW_PRIVATE_HOSTS": "true",  # the devnet's PDS hosts are on loopback
        }

        async def working() -> bool:
            groups = await redis_client.xinfo_groups(keys.stream("repo_backfill"))
            return bool(groups) and int(groups[0].get("entries-read") or 0) >= 1

        await stop_within_grace(tmp_path, ["backfiller"], env, working, "a job taken")


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[str]:
    """A database of this test's own (the indexer migrates its public schema)."""
    name = f"streamfill_t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(database_url)
        yield urlunsplit(parts._replace(path=f"/{name}"))
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_indexer(
    tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, prefix: str, database: str
) -> None:
    stream = Keys(prefix).stream(LIVE)
    for i in range(20):
        message = create("did:plc:alice", POST, f"p{i}", tid(i + 1), f"c{i}", body(POST))
        await xadd(redis_client, stream, dict(entry(LIVE, message).fields))
    env = smallest(INDEXER) | {"REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix, "DATABASE_URL": database}

    async def indexing() -> bool:
        groups = await redis_client.xinfo_groups(stream)
        return bool(groups) and int(groups[0].get("entries-read") or 0) >= 1

    await stop_within_grace(tmp_path, ["indexer"], env, indexing, "entries read")


@pytest.mark.leaves_pending(
    "REPLAYER_ES_TIMEOUT_SECS at its minimum (0.1 s) times a bulk call out on a busy machine: its "
    "documents wait for a retry, unacked, and a SIGTERM then leaves them pending for the next run"
)
async def test_replayer(tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, prefix: str) -> None:
    root = tmp_path / "captains_log"
    root.mkdir()
    sample_log(root, captures=20, reflections=5)
    with FakeElasticsearch() as es:
        env = smallest(REPLAYER) | {
            "REDIS_URL": redis_url,
            "STREAMFILL_PREFIX": prefix,
            "ES_URL": es.url,
            "REPLAYER_ROOT": str(root),
        }

        async def replaying() -> bool:
            return bool(await redis_client.xlen(Keys(prefix).stream("captains_log")))

        await stop_within_grace(tmp_path, ["replayer", "run"], env, replaying, "documents enqueued")
