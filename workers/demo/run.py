"""The main job: embedded servers, a devnet, the workers as separate processes, a live dashboard,
then an exact verification of PostgreSQL against the devnet's ground truth.

Phases: start -> backfill (until listing is done and every stream is drained) -> settle (devnet
activity paused; wait until the ingester's cursors reach the devnet's last seqs and everything is
drained again) -> verify.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis

from streams import (
    EmbeddedCluster,
    EmbeddedClusterOptions,
    Keys,
    StreamNames,
    connect,
    host_key,
    redis_url_or_embedded,
)
from workers._edge import connect_postgres, redis_errors
from workers._embedded_pg import database_url_or_embedded
from workers.demo.options import DemoError, DemoOptions
from workers.demo.procs import Child, child_env, cpu_by_kind
from workers.demo.progress import Snapshot
from workers.demo.watch import Watcher
from workers.indexer.verify import Verdict, verify
from workers.settings import masked


def run_demo(options: DemoOptions) -> int:
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="streamfill-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with (
        _redis(options) as (redis_url, cluster),
        database_url_or_embedded(options.database_url) as server_url,
        _devnet(options, workdir) as devnet,
    ):
        name = f"streamfill_demo_{int(time.time())}_{os.getpid()}"
        database_url = anyio.run(_create_database, server_url, name)
        ok = False
        try:
            with redis_errors(redis_url):
                code = anyio.run(_run, options, workdir, (redis_url, cluster), database_url, devnet)
            ok = code == 0
            return code
        finally:
            if ok and not options.keep:
                anyio.run(_drop_database, server_url, name)


@contextlib.contextmanager
def _redis(options: DemoOptions) -> Iterator[tuple[str, EmbeddedCluster | None]]:
    """One Valkey (REDIS_URL or embedded), or with `cluster` an embedded Redis Cluster of that
    many masters, a replica each (docs/cluster.md)."""
    if not options.cluster:
        with redis_url_or_embedded(options.redis_url) as url:
            yield url, None
        return
    with EmbeddedCluster(
        EmbeddedClusterOptions(masters=options.cluster, replicas=1, node_timeout_ms=CLUSTER_NODE_TIMEOUT_MS)
    ) as cluster:
        yield cluster.url, cluster


# Short enough for a failover in seconds, long enough that a loaded 2-core machine's scheduling
# stalls do not get a master flagged failed.
CLUSTER_NODE_TIMEOUT_MS = 3000


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _create_database(server_url: str, name: str) -> str:
    """A database of this run's own: the verdict must not see rows of an earlier run."""
    conn = await connect_postgres(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(server_url, name)


async def _forget(redis: aioredis.Redis, prefix: str) -> None:
    """Delete this run's keys: a correct run leaves nothing behind on a shared Redis, as it drops
    its database (after the workers stopped: a heartbeat must not come back)."""
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await redis.unlink(*batch)
            batch.clear()
    if batch:
        await redis.unlink(*batch)


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.contextmanager
def _devnet(options: DemoOptions, workdir: Path) -> Iterator[dict[str, Any]]:
    """`streamfill devnet` as a child process; yields the URLs it prints as one JSON line."""
    args = [
        sys.executable,
        "-m",
        "workers.cli",
        "devnet",
        "--repos",
        str(options.repos),
        "--seed",
        str(options.seed),
        "--firehose-rate",
        str(options.firehose_rate),
        "--truth",
        str(workdir / "truth.jsonl"),
    ]
    log = (workdir / "devnet.log").open("ab")
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise DemoError(f"devnet did not start; see {workdir / 'devnet.log'}")
        yield json.loads(line) | {"startup_s": time.monotonic() - started}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


async def _run(
    options: DemoOptions,
    workdir: Path,
    servers: tuple[str, EmbeddedCluster | None],
    database_url: str,
    devnet: dict[str, Any],
) -> int:
    redis_url, cluster = servers
    prefix = f"demo{int(time.time())}"
    keys = Keys(prefix)
    relay = devnet["relay"]
    redis: aioredis.Redis = connect(redis_url, cluster=True) if cluster else connect(redis_url)  # type: ignore[assignment]
    pg = await asyncpg.connect(database_url)
    # Replay the relay's firehose from its start: events before the ingester connected are not missed.
    await redis.set(keys.cursor(StreamNames.FIREHOSE_LIVE, host_key(relay)), "0")
    base_env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "STREAMFILL_PREFIX": prefix,
        "PLC_URL": devnet["plc"],
        "INGESTER_RELAY_HOSTS": relay,
        "INGESTER_LABELER_HOSTS": devnet["labeler"],
        "BACKFILLER_MIN_IDLE_MS": "5000",
        "INDEXER_MIN_IDLE_MS": "5000",
        "BACKFILLER_PDS_RPS": "200",
        "BACKFILLER_CONCURRENCY": "6",
        # The devnet's PDS hosts listen on loopback, which the SSRF policy refuses by default.
        "STREAMFILL_ALLOW_PRIVATE_HOSTS": "true",
        "STREAMFILL_PARTITIONS": str(options.partition_count),
    }
    if cluster is not None:
        # Every write the workers acknowledge is on a replica first: a failover loses nothing
        # silently (docs/cluster.md).
        base_env |= {"STREAMFILL_REDIS_CLUSTER": "yes", "STREAMFILL_WAIT_REPLICAS": "1"}
    _migrate(base_env, workdir)
    children = _children(base_env, workdir, options)
    started = time.monotonic()
    forget = False
    try:
        for child in children:
            child.start()
        async with httpx.AsyncClient(base_url=relay, timeout=30) as http:
            verdict, final, times = await _drive(
                options, redis, keys, pg, http, devnet, children, started, cluster
            )
        elapsed = time.monotonic() - started
        if not options.keep:  # stopped before the report, which gives their CPU seconds
            for child in children:
                child.stop()
        _report(options, verdict, final, (elapsed, times), children, workdir, prefix)
        if options.keep:
            await _keep(options, devnet, redis_url, database_url, prefix)
        forget = verdict.ok and not options.keep and cluster is None  # an embedded cluster goes anyway
        return 0 if verdict.ok else 1
    finally:
        for child in children:
            child.stop()
        await pg.close()
        if forget:
            await _forget(redis, prefix)
        await redis.aclose()


def _migrate(env: dict[str, str], workdir: Path) -> None:
    with (workdir / "migrate.log").open("ab") as log:
        subprocess.run(
            [sys.executable, "-m", "workers.cli", "indexer", "--migrate"],
            env=child_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )


def _children(env: dict[str, str], workdir: Path, options: DemoOptions) -> list[Child]:
    """1 ingester, 2 backfillers, 2 indexers by default: the horizontally scaled shape."""

    def child(name: str, args: list[str], **extra: str) -> Child:
        return Child(name, args, child_env(env, **extra), workdir / f"{name}.log")

    backfillers = [f"backfiller-{i}" for i in range(1, options.backfillers + 1)]
    indexers = [f"indexer-{i}" for i in range(1, options.indexers + 1)]
    return [
        child("ingester", ["ingester", "--mode", "all"]),
        *(child(name, ["backfiller"], BACKFILLER_CONSUMER=name) for name in backfillers),
        *(child(name, ["indexer"], INDEXER_CONSUMER=name) for name in indexers),
    ]


@dataclass(frozen=True)
class PhaseTimes:
    """Seconds spent in each phase (the devnet's start, generation included, comes before the
    workers start). The pipeline phase ends at the first moment listing was done
    and every stream drained (the extra ticks that confirm it are settle time)."""

    devnet_startup_s: float
    pipeline_s: float
    settle_s: float
    verify_s: float
    master_failovers: int = 0  # with --cluster --chaos: masters killed and taken over by a replica


async def _drive(
    options: DemoOptions,
    redis: aioredis.Redis,
    keys: Keys,
    pg: Any,
    http: httpx.AsyncClient,
    devnet: dict[str, Any],
    children: list[Child],
    started: float,
    cluster: EmbeddedCluster | None = None,
) -> tuple[Verdict, Snapshot, PhaseTimes]:
    relay = devnet["relay"]
    watch = Watcher(options, redis, keys, pg, http, host_key(relay), children, started)
    watch.cluster = cluster
    watch.labeler_host = host_key(devnet["labeler"])
    # Under --chaos the phase also lasts until a few workers were killed: a small network can be
    # drained before a worker that was killed is even back up, and a run without kills proves nothing.
    await watch.until(lambda s: s.listing_done and s.drained() and watch.chaos_done(), "backfill", stable=3)
    drained_at = watch.reached_at
    await http.post("/control/pause")
    stats = (await http.get("/stats")).json()
    firehose_key = keys.cursor(StreamNames.FIREHOSE_LIVE, host_key(relay))
    labels_key = keys.cursor(StreamNames.LABEL_LIVE, watch.labeler_host)
    last_seq, last_label = int(stats["firehose_seq"]), int(stats["labels_seq"])
    watch.chaos = False  # settle without kills, then verify an exact, quiet state
    truth: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg:
        # Paused, the devnet's truth is final: fetch and parse it while the pipeline settles.
        tg.start_soon(_fetch_truth, http, truth)
        await watch.until(
            lambda s: True, "settle", stable=1, cursors=((firehose_key, last_seq), (labels_key, last_label))
        )
        final = await watch.until(lambda s: s.drained(), "settle", stable=4)
        settled_at = time.monotonic()
        if not options.json:
            print("\nverifying against the devnet's ground truth ...", flush=True)
    verdict = await verify(pg, truth)  # verify_s: what is left of the truth's fetch, and this
    verify_s = time.monotonic() - settled_at
    times = PhaseTimes(
        devnet["startup_s"], drained_at - started, settled_at - drained_at, verify_s, watch.failovers
    )
    return verdict, replace(final, database_bytes=await pg.fetchval(_DATABASE_BYTES)), times


# Heap, TOAST and indexes of every table of the schema the indexer wrote (after it ran: with the
# free space and dead rows online indexing leaves).
_DATABASE_BYTES = """
SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'r'
"""


async def _fetch_truth(http: httpx.AsyncClient, into: list[dict[str, Any]]) -> None:
    """The devnet's ground truth (JSON lines), parsed in a thread (tens of MB at 20,000 repos)."""
    body = (await http.get("/truth")).content
    into.extend(await anyio.to_thread.run_sync(_parse_lines, body))


def _parse_lines(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


def _report(
    options: DemoOptions,
    verdict: Verdict,
    final: Snapshot,
    elapsed: tuple[float, PhaseTimes],
    children: list[Child],
    workdir: Path,
    prefix: str,
) -> None:
    seconds, times = elapsed
    doc = verdict.to_json() | {
        "seconds": round(seconds, 1),
        "pipeline_s": round(times.pipeline_s, 1),
        "settle_s": round(times.settle_s, 1),
        "verify_s": round(times.verify_s, 1),
        "devnet_startup_s": round(times.devnet_startup_s, 1),
        # The pipeline's rate: settle and verify are the demo's own checks, not indexing work.
        "records_per_s": round(verdict.indexed / times.pipeline_s, 1) if times.pipeline_s > 0 else 0.0,
        "database_bytes_per_record": round(final.database_bytes / max(verdict.indexed, 1)),
        "repos": final.devnet.get("repos"),
        "kills": sum(c.kills for c in children),
        "master_failovers": times.master_failovers,
        "restarts": sum(c.restarts for c in children),
        # CPU seconds of each kind of worker, summed over its replicas and restarts (once stopped),
        # and the part of it they had used when ready (start-up: imports, connections).
        "cpu_s": cpu_by_kind(children),
        "startup_cpu_s": cpu_by_kind(children, startup=True),
        "dead_letters": {name: row.dlq for name, row in final.rows.items()},
        "logs": str(workdir),
        "prefix": prefix,
    }
    if options.json:
        print(json.dumps(doc))
        return
    print()
    print("VERDICT: " + ("OK — PostgreSQL equals the network exactly" if verdict.ok else "MISMATCH"))
    for key, value in doc.items():
        print(f"  {key:<18} {value}")


async def _keep(
    options: DemoOptions, devnet: dict[str, Any], redis_url: str, database_url: str, prefix: str
) -> None:
    print(
        f"\n--keep: everything stays up. REDIS_URL={masked(redis_url)} "
        f"DATABASE_URL={masked(database_url)} "
        f"STREAMFILL_PREFIX={prefix} relay={devnet['relay']}. Ctrl-C to stop.",
        file=sys.stderr,
    )
    with contextlib.suppress(KeyboardInterrupt):
        await anyio.sleep_forever()
