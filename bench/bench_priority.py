"""Live latency under a saturating backfill: priority and throttle on vs off (issue #14, part 3).

One `streamfill indexer` process (a child, as deployed) reads firehose_live, firehose_backfill
and label_live. Live post creates arrive at a steady BENCH_PRIORITY_LIVE_RATE/s into
firehose_live; the latency of one is from its XADD (its entry id: the server's clock) to its row
being visible in PostgreSQL (polled every POLL_S, so each figure is late by up to POLL_S). Three
runs, each on a fresh database and key prefix:

  quiet:   live events only (the baseline);
  on:      plus a backfill of BENCH_PRIORITY_BACKFILL record creates written flat out into
           firehose_backfill, with INDEXER_LIVE_FIRST=true and the writer throttled on live lag
           (THROTTLE_LIVE_LAG_S=2, THROTTLE_RESUME_LAG_S=1, as the backfiller's);
  off:     the same backfill, INDEXER_LIVE_FIRST=false and no throttle.

Prints p50 / p99 / max of each run, the backfill's rate, and p99(off) / p99(on). Not a timed
test: run it on a quiet machine (the load average is printed with the figures).

    BENCH_PRIORITY_BACKFILL=120000   backfill events (at least 100k for the figure in docs)
    BENCH_PRIORITY_LIVE_RATE=100     live events a second

Against embedded PostgreSQL / Valkey unless DATABASE_URL / REDIS_URL are set.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_redis_url, report
from bench.bench_indexer import _record
from schemas import RecordCreate, encode_entry
from streams import Keys, Producer, ProducerConfig, Throttle, ThrottleConfig, connect
from workers._embedded_pg import database_url_or_embedded

BACKFILL = int(os.environ.get("BENCH_PRIORITY_BACKFILL", "120000"))
LIVE_RATE = float(os.environ.get("BENCH_PRIORITY_LIVE_RATE", "100"))
QUIET_S = 10.0  # the baseline run's length
POLL_S = 0.005
BATCH = 500
LIVE_DID = "did:plc:benchlivewriter0000000000"
POST = "app.bsky.feed.post"


@dataclass(frozen=True)
class Run:
    name: str
    backfill: bool
    live_first: bool
    throttle: bool


RUNS = (
    Run("quiet", backfill=False, live_first=True, throttle=True),
    Run("on", backfill=True, live_first=True, throttle=True),
    Run("off", backfill=True, live_first=False, throttle=False),
)


def backfill_events(n: int, seed: int = 11) -> list[dict[bytes, bytes]]:
    """Encoded `create` events with seq -1, a firehose-like mix of collections over 2000 repos."""
    rng = random.Random(seed)
    dids = [f"did:plc:{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}" for _ in range(2000)]
    posts: list[str] = []
    out = []
    for i in range(n):
        collection, record = _record(rng, rng.random() * 0.95, dids, posts)
        did = rng.choice(dids)
        event = RecordCreate(
            seq=-1,
            did=did,
            rev=f"3l{i:011d}",
            collection=collection,
            rkey=f"3k{i:011d}",
            cid=f"bafyrei{uuid.UUID(int=rng.getrandbits(128)).hex}",
            record=msgspec.Raw(orjson.dumps(record)),
        )
        out.append(encode_entry("firehose_backfill", event))
    return out


def live_event(i: int) -> dict[bytes, bytes]:
    record = {"createdAt": "2024-05-01T12:00:00.000Z", "text": f"live {i}", "langs": ["en"]}
    event = RecordCreate(
        seq=i + 1,
        did=LIVE_DID,
        rev=f"3m{i:011d}",
        collection=POST,
        rkey=f"live{i:08d}",
        cid=f"bafyreilive{i:08d}",
        record=msgspec.Raw(orjson.dumps(record)),
    )
    return encode_entry("firehose_live", event)


async def fresh_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    path, _, query = server_url.partition("?")  # pgserver's URI: ...@/postgres?host=/tmp/...
    return f"{path.rpartition('/')[0]}/{name}" + (f"?{query}" if query else "")


class Measure:
    """Live events written, and when each one's row appeared."""

    def __init__(self) -> None:
        self.written: dict[str, int] = {}  # rkey -> XADD ms (entry id)
        self.seen: dict[str, float] = {}  # rkey -> ms the row was first seen
        self.backfill_s = 0.0

    def latencies(self) -> list[float]:
        return sorted(self.seen[k] - self.written[k] for k in self.seen)


async def run_once(
    run: Run, redis_url: str, server_url: str, events: list[dict[bytes, bytes]]
) -> dict[str, Any]:
    prefix = f"bp{uuid.uuid4().hex[:8]}"
    database_url = await fresh_database(server_url, f"bench_priority_{run.name}")
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "STREAMFILL_PREFIX": prefix,
        "INDEXER_LIVE_FIRST": "true" if run.live_first else "false",
        "STREAMFILL_LOG_LEVEL": "warning",
    }
    child = spawn_indexer(env)
    redis = connect(redis_url)
    keys = Keys(prefix)
    measure = Measure()
    try:
        await _wait_for_groups(redis, keys, child)
        pg = await asyncpg.connect(database_url)
        try:
            async with anyio.create_task_group() as tg:
                done = anyio.Event()
                if run.backfill:
                    tg.start_soon(_backfill, redis, keys, run, events, measure, done)
                else:
                    tg.start_soon(_after, QUIET_S, done)
                tg.start_soon(_live, redis, keys, measure, done)
                await _poll(pg, measure, done)
                tg.cancel_scope.cancel()
        finally:
            await pg.close()
    finally:
        child.terminate()
        child.wait(timeout=60)
        await redis.aclose()
    lat = measure.latencies()
    row: dict[str, Any] = {
        "run": run.name,
        "live_events": len(lat),
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[int(len(lat) * 0.99)],
        "max_ms": lat[-1],
    }
    if run.backfill:
        row["backfill_events_per_s"] = len(events) / measure.backfill_s
    return row


def spawn_indexer(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "workers.cli", "indexer"], env=env)


async def _wait_for_groups(redis: Any, keys: Keys, child: subprocess.Popen[bytes]) -> None:
    for stream in ("firehose_live", "firehose_backfill"):
        while True:
            if child.poll() is not None:
                raise SystemExit(f"the indexer exited with status {child.returncode}")
            if await redis.exists(keys.stream(stream)) and await redis.xinfo_groups(keys.stream(stream)):
                break
            await anyio.sleep(0.05)


async def _after(seconds: float, done: anyio.Event) -> None:
    await anyio.sleep(seconds)
    done.set()


async def _backfill(
    redis: Any, keys: Keys, run: Run, events: list[dict[bytes, bytes]], measure: Measure, done: anyio.Event
) -> None:
    """Write the backfill flat out (backpressure at 50k, as a backfiller), then wait until indexed."""
    throttle = None
    if run.throttle:
        live = (keys.stream("firehose_live"), keys.stream("label_live"))
        throttle = Throttle(redis, ThrottleConfig(watched=tuple((s, "") for s in live), worker="bench"))
    producer = Producer(
        redis, ProducerConfig(keys.stream("firehose_backfill"), high_water=50_000), throttle=throttle
    )
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        await producer.send(events[i : i + BATCH])
    stream = keys.stream("firehose_backfill")
    while True:
        [group] = await redis.xinfo_groups(stream)
        if group["lag"] == 0 and group["pending"] == 0:
            break
        await anyio.sleep(0.05)
    measure.backfill_s = time.perf_counter() - started
    done.set()


async def _live(redis: Any, keys: Keys, measure: Measure, done: anyio.Event) -> None:
    interval, i = 1 / LIVE_RATE, 0
    next_at = time.monotonic()
    while not done.is_set():
        entry_id = await redis.xadd(keys.stream("firehose_live"), live_event(i))
        measure.written[f"live{i:08d}"] = int(entry_id.split(b"-")[0])
        i += 1
        next_at += interval
        await anyio.sleep(max(0.0, next_at - time.monotonic()))


async def _poll(pg: asyncpg.Connection, measure: Measure, done: anyio.Event) -> None:
    """Every POLL_S, which outstanding live posts have a row; after `done`, until all have."""
    while True:
        waiting = [k for k in measure.written if k not in measure.seen]
        if done.is_set() and not waiting:
            return
        if waiting:
            rows = await pg.fetch(
                "SELECT rkey FROM post WHERE did = $1 AND rkey = ANY($2)", LIVE_DID, waiting
            )
            now_ms = time.time() * 1000
            for r in rows:
                measure.seen[r["rkey"]] = now_ms
        await anyio.sleep(POLL_S)


async def main(redis_url: str, server_url: str) -> None:
    events = backfill_events(BACKFILL)
    rows = [await run_once(run, redis_url, server_url, events) for run in RUNS]
    on, off = rows[1]["p99_ms"], rows[2]["p99_ms"]
    rows.append({"p99_off_over_on": off / on if on else float("inf"), "backfill_events": BACKFILL})
    report("priority", rows)


if __name__ == "__main__":
    with bench_redis_url() as redis_url, database_url_or_embedded(os.environ.get("DATABASE_URL")) as pg_url:
        anyio.run(main, redis_url, pg_url)
