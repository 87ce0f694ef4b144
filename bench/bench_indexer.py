"""Indexer apply path vs raw COPY + merge, on the same PostgreSQL in the same run.

raw:      asyncpg copy_records_to_table of pre-built rows into a staging table (ON COMMIT DELETE
          ROWS, as the indexer's), then one INSERT ... SELECT ... ON CONFLICT into a plain table
          with `record`'s columns; one transaction per batch.
indexer:  IndexerHandler on the same number of realistic encoded events (decode, collapse,
          record merge, per-collection tables, aggregates), same batch size.
The two run batch by batch, paired (see bench_paired), BENCH_ROUNDS times (5); the ratio printed
is the median of the rounds' ratios. Target: indexer / raw >= 0.35. Then, through Redis and the
real consumer, the live latency from XADD to commit (`measure_live_latency`).

Against embedded PostgreSQL / Valkey unless DATABASE_URL / REDIS_URL are set.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_redis_url, report, xfields
from schemas import RecordCreate, RecordDelete, RecordUpdate, contract_for, encode_entry
from streams import BatchHandler, Consumer, ConsumerConfig, Entry, Keys, connect
from workers._embedded_pg import database_url_or_embedded
from workers.indexer import IndexerHandler
from workers.indexer.batch import Batch, decode
from workers.indexer.db import create_pool
from workers.indexer.migrate import migrate
from workers.indexer.store import main_statements, stage_ops

LIVE = "firehose_live"
N = int(os.environ.get("BENCH_EVENTS", "60000"))
BATCH = int(os.environ.get("BENCH_BATCH", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
LIVE_EVENTS = 3000
# events/s, as the issue asks; 0 skips the live latency part (throughput comparisons only)
LIVE_RATE = int(os.environ.get("BENCH_LIVE_RATE", "2000"))

_RAW_TABLE = """
CREATE TABLE raw_record (uri text COLLATE "C" PRIMARY KEY, cid text, did text COLLATE "C",
    collection text COLLATE "C", rkey text, rev text COLLATE "C", json jsonb,
    indexed_at timestamptz NOT NULL DEFAULT now());
CREATE TEMP TABLE raw_stage (uri text COLLATE "C", cid text, did text COLLATE "C",
    collection text COLLATE "C", rkey text, rev text COLLATE "C", json jsonb) ON COMMIT DELETE ROWS;
"""
_RAW_MERGE = """
INSERT INTO raw_record AS r (uri, cid, did, collection, rkey, rev, json)
SELECT uri, cid, did, collection, rkey, rev, json FROM raw_stage ORDER BY uri
ON CONFLICT (uri) DO UPDATE SET cid = excluded.cid, rev = excluded.rev, json = excluded.json
WHERE r.rev <= excluded.rev
"""


def make_events(n: int, seed: int = 7) -> list[Any]:
    """A firehose-like mix: likes, posts and replies, reposts, follows, some updates and deletes."""
    rng = random.Random(seed)
    dids = [f"did:plc:{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}" for _ in range(2000)]
    posts: list[str] = []
    written: list[tuple[str, str, str]] = []
    events: list[Any] = []
    for i in range(n):
        did, rev, roll = rng.choice(dids), f"3l{i:011d}", rng.random()
        if roll < 0.05 and written:
            d, c, k = rng.choice(written)
            events.append(RecordDelete(seq=i, did=d, rev=rev, collection=c, rkey=k))
            continue
        collection, record = _record(rng, roll, dids, posts)
        rkey = f"3k{i:011d}"
        if collection == "app.bsky.feed.post":
            posts.append(f"at://{did}/{collection}/{rkey}")
        written.append((did, collection, rkey))
        cls = RecordUpdate if roll > 0.98 else RecordCreate
        events.append(
            cls(
                seq=i,
                did=did,
                rev=rev,
                collection=collection,
                rkey=rkey,
                cid=f"bafyrei{uuid.UUID(int=rng.getrandbits(128)).hex}",
                record=msgspec.Raw(orjson.dumps(record)),
            )
        )
    return events


def _record(rng: random.Random, roll: float, dids: list[str], posts: list[str]) -> tuple[str, dict[str, Any]]:
    base = {"createdAt": "2024-05-01T12:00:00.000Z"}
    target = rng.choice(posts) if posts else "at://did:plc:x/app.bsky.feed.post/1"
    if roll < 0.50:
        return "app.bsky.feed.like", {**base, "subject": {"uri": target, "cid": "bafyreisubject"}}
    if roll < 0.75:
        record: dict[str, Any] = {**base, "text": "some words " * rng.randint(1, 12), "langs": ["en"]}
        if rng.random() < 0.3:
            ref = {"uri": target, "cid": "bafyreiparent"}
            record["reply"] = {"root": ref, "parent": ref}
        return "app.bsky.feed.post", record
    if roll < 0.85:
        return "app.bsky.feed.repost", {**base, "subject": {"uri": target, "cid": "bafyreisubject"}}
    return "app.bsky.graph.follow", {**base, "subject": rng.choice(dids)}


def raw_rows(events: list[Any]) -> list[tuple[Any, ...]]:
    """One row per event, each under a key of its own (a plain bulk load has no conflicts)."""
    return [
        (
            f"at://{e.did}/{e.collection}/{e.rkey}#{i}",
            getattr(e, "cid", None),
            e.did,
            e.collection,
            e.rkey,
            e.rev,
            bytes(e.record).decode() if hasattr(e, "record") else None,
        )
        for i, e in enumerate(events)
    ]


@contextlib.asynccontextmanager
async def scratch_schema(url: str) -> AsyncIterator[str]:
    """A new schema for one measurement, dropped afterwards: a server given by DATABASE_URL keeps
    nothing (each indexer round leaves ~60k rows in a dozen tables)."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url)
    await conn.execute(f"CREATE SCHEMA {name}")
    await conn.close()
    try:
        yield name
    finally:
        conn = await asyncpg.connect(url)
        await conn.execute(f"DROP SCHEMA {name} CASCADE")
        await conn.close()


@dataclasses.dataclass
class Side:
    """What one side of the paired run spent: wall seconds, PostgreSQL backend CPU seconds (None
    when the server is not on this machine), this process' CPU seconds, and WAL bytes."""

    wall: float = 0.0
    pg_cpu: float | None = 0.0
    py_cpu: float = 0.0
    wal: int = 0

    def add(self, wall: float, pg_cpu: float | None, py_cpu: float) -> None:
        self.wall += wall
        self.pg_cpu = None if self.pg_cpu is None or pg_cpu is None else self.pg_cpu + pg_cpu
        self.py_cpu += py_cpu


# WAL written by one side's batch (both sides run one after the other on the same server).
_WAL_LSN = "SELECT pg_current_wal_insert_lsn()"
_WAL_SINCE = "SELECT (pg_current_wal_insert_lsn() - $1::pg_lsn)::bigint"


def backend_cpu_s(pid: int) -> float | None:
    """CPU time of a PostgreSQL backend so far (/proc/<pid>/schedstat, in ns), if it is local."""
    try:
        with open(f"/proc/{pid}/schedstat") as fh:
            return int(fh.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _backends_cpu_s(pids: tuple[int, ...]) -> float | None:
    times = [backend_cpu_s(pid) for pid in pids]
    return None if None in times else sum(t for t in times if t is not None)


async def timed(side: Side, pid: int, call: Any) -> None:
    """Run `call()` and add its wall, backend CPU and process CPU time to `side`."""
    pg0, py0, t0 = backend_cpu_s(pid), time.process_time(), time.perf_counter()
    await call()
    wall, py, pg1 = time.perf_counter() - t0, time.process_time() - py0, backend_cpu_s(pid)
    side.add(wall, None if pg0 is None or pg1 is None else pg1 - pg0, py)


async def bench_paired(url: str, rows: list[tuple[Any, ...]], entries: list[Entry]) -> tuple[Side, Side]:
    """Raw and indexer batch by batch, alternating which goes first; returns what each spent.

    Pairing each indexer batch with a raw batch of the same events, timed next to each other,
    makes both sides see the same machine (a 2-core VM whose speed drifts): timing one side's
    whole run and then the other's let a short raw run catch a quiet moment the longer indexer
    run did not, and the ratio swung by ±20 %.
    """
    async with scratch_schema(url) as raw_schema, scratch_schema(url) as idx_schema:
        conn = await asyncpg.connect(url, server_settings={"search_path": raw_schema})
        pool = await create_pool(url, max_size=1, schema=idx_schema)
        try:
            await conn.execute(_RAW_TABLE)
            async with pool.acquire() as c:
                await migrate(c)
                idx_pid = c.get_server_pid()
            handler = IndexerHandler(pool)

            async def raw_batch(batch: list[Any]) -> None:
                async with conn.transaction():
                    await conn.copy_records_to_table("raw_stage", records=batch)
                    await conn.execute(_RAW_MERGE)

            raw, idx = Side(), Side()
            for n, i in enumerate(range(0, len(rows), BATCH)):
                pair = [
                    (raw, conn.get_server_pid(), functools.partial(raw_batch, rows[i : i + BATCH])),
                    (idx, idx_pid, functools.partial(handler, entries[i : i + BATCH])),
                ]
                for side, pid, call in pair if n % 2 == 0 else pair[::-1]:
                    lsn = await conn.fetchval(_WAL_LSN)
                    await timed(side, pid, call)
                    side.wal += await conn.fetchval(_WAL_SINCE, lsn)
            assert handler.statistics().dead_lettered == 0
        finally:
            await pool.close()
            await conn.close()
    return raw, idx


async def profile_statements(url: str, entries: list[Entry]) -> dict[str, Side]:
    """The indexer's transaction statement by statement (each its own round trip, unlike the
    handler's one multi-statement query): where PostgreSQL's time goes."""
    profile: dict[str, Side] = collections.defaultdict(Side)
    async with scratch_schema(url) as schema:
        pool = await create_pool(url, max_size=1, schema=schema)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                pid = conn.get_server_pid()
                for i in range(0, len(entries), BATCH):
                    py0 = time.process_time()
                    batch = Batch.of(decode(contract_for(e.stream), e.fields) for e in entries[i : i + BATCH])
                    profile["decode + collapse (Python)"].add(0.0, 0.0, time.process_time() - py0)
                    await _profile_batch(conn, pid, batch, profile)
        finally:
            await pool.close()
    return profile


async def _profile_batch(conn: Any, pid: int, batch: Batch, profile: dict[str, Side]) -> None:
    await timed(profile["begin"], pid, functools.partial(conn.execute, "BEGIN"))
    await timed(profile["COPY ops"], pid, functools.partial(stage_ops, conn, batch))
    for statement in main_statements(batch):
        run = functools.partial(conn.execute, statement.sql, *statement.args)
        await timed(profile[statement.name], pid, run)
    await timed(profile["commit"], pid, functools.partial(conn.execute, "COMMIT"))


async def measure_consumer_path(url: str, redis_url: str, entries: list[Entry]) -> Side:
    """The whole path of one indexer process: the entries already in a stream, read by the real
    Consumer (two batches in flight, as the indexer's default concurrency) into IndexerHandler on
    a pool of two connections. PostgreSQL CPU is both backends'."""
    async with scratch_schema(url) as schema:
        pool = await create_pool(url, max_size=2, schema=schema)
        redis = connect(redis_url)
        stream = Keys(f"bench{uuid.uuid4().hex[:6]}").stream(LIVE)
        try:
            async with pool.acquire() as c1, pool.acquire() as c2:
                await migrate(c1)
                pids = (c1.get_server_pid(), c2.get_server_pid())
            for i in range(0, len(entries), BATCH):
                async with redis.pipeline(transaction=False) as pipe:
                    for e in entries[i : i + BATCH]:
                        pipe.xadd(stream, xfields(e.fields))
                    await pipe.execute()
            consumer = Consumer(
                redis,
                ConsumerConfig(
                    stream, "firehose_group", "bench", batch_size=BATCH, concurrency=2, block_ms=50
                ),
                IndexerHandler(pool).reading(contract_for(LIVE)),  # a prefixed key: wired as the worker does
            )
            await consumer.ensure_group()
            side = Side()
            pg0, py0, t0 = _backends_cpu_s(pids), time.process_time(), time.perf_counter()
            await consumer.run_until_idle()
            side.wall, side.py_cpu = time.perf_counter() - t0, time.process_time() - py0
            pg1 = _backends_cpu_s(pids)
            side.pg_cpu = None if pg0 is None or pg1 is None else pg1 - pg0
            assert consumer.statistics().acked == len(entries)
        finally:
            await redis.delete(stream)
            await redis.aclose()
            await pool.close()
    return side


async def measure_live_latency(url: str, redis_url: str, events: list[Any]) -> dict[str, float]:
    """XADD at LIVE_RATE/s into a stream read by the real Consumer + IndexerHandler; the latency of
    an event is the time from its XADD (its entry id) to the commit of the batch holding it."""
    async with scratch_schema(url) as schema:
        pool = await create_pool(url, max_size=2, schema=schema)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            latencies = await _live_latencies(
                IndexerHandler(pool).reading(contract_for(LIVE)), redis_url, events
            )
        finally:
            await pool.close()
    latencies.sort()
    return {"p50_ms": latencies[len(latencies) // 2], "p99_ms": latencies[int(len(latencies) * 0.99)]}


async def _live_latencies(inner: BatchHandler, redis_url: str, events: list[Any]) -> list[float]:
    keys, all_seen = Keys(f"bench{uuid.uuid4().hex[:6]}"), anyio.Event()
    latencies: list[float] = []
    stream = keys.stream("firehose_live")
    redis = connect(redis_url)

    async def handler(entries: Any) -> Any:
        outcomes = await inner(entries)
        now_ms = time.time() * 1000
        latencies.extend(now_ms - int(e.id.split("-")[0]) for e in entries)
        if len(latencies) >= len(events):
            all_seen.set()
        return outcomes

    consumer = Consumer(
        redis,
        ConsumerConfig(stream, "firehose_group", "bench", batch_size=BATCH, concurrency=2, block_ms=50),
        handler,
    )
    await consumer.ensure_group()
    async with anyio.create_task_group() as tg:
        await tg.start(consumer.run)
        for e in events:
            await redis.xadd(stream, xfields(encode_entry("firehose_live", e)))
            await anyio.sleep(1 / LIVE_RATE)
        await all_seen.wait()
        consumer.stop()
    await redis.delete(stream)
    await redis.aclose()
    return latencies


def _us(seconds: float | None, events: int) -> float | str:
    return "n/a" if seconds is None else seconds / events * 1e6


async def main(url: str, redis_url: str) -> None:
    events = make_events(N)
    entries = [Entry(LIVE, f"{i}-0", encode_entry(LIVE, e)) for i, e in enumerate(events)]
    rows = raw_rows(events)
    rounds = [await bench_paired(url, rows, entries) for _ in range(ROUNDS)]
    ratios = sorted(raw.wall / idx.wall for raw, idx in rounds)
    median = rounds[sorted(range(ROUNDS), key=lambda r: rounds[r][0].wall / rounds[r][1].wall)[ROUNDS // 2]]
    raw, idx = median
    rows_out: list[dict[str, Any]] = [
        {
            "path": "raw COPY+merge",
            "events_per_s": N / raw.wall,
            "pg_us_per_event": _us(raw.pg_cpu, N),
            "py_us_per_event": _us(raw.py_cpu, N),
            "wal_bytes_per_event": raw.wal / N,
        },
        # The ratio is the median of the rounds' paired ratios; the rates are that round's.
        {
            "path": "indexer apply",
            "events_per_s": N / idx.wall,
            "ratio": ratios[len(ratios) // 2],
            "ratio_range": f"{ratios[0]:.3f}-{ratios[-1]:.3f}",
            "target": 0.5,
            "pg_us_per_event": _us(idx.pg_cpu, N),
            "py_us_per_event": _us(idx.py_cpu, N),
            "wal_bytes_per_event": idx.wal / N,
        },
    ]
    path = await measure_consumer_path(url, redis_url, entries)
    row: dict[str, Any] = {
        "path": "one indexer process: Redis -> consumer -> handler -> PostgreSQL",
        "events_per_s": N / path.wall,
        "pg_us_per_event": _us(path.pg_cpu, N),
        "py_us_per_event": _us(path.py_cpu, N),
    }
    if path.pg_cpu is not None:
        # With PostgreSQL on a core of its own and two batches in flight, the process is bound
        # by the busier of the two: its own CPU per event, or PostgreSQL's.
        row |= {"with_own_pg_core_events_per_s": N / max(path.pg_cpu, path.py_cpu), "target": 40000}
    rows_out.append(row)
    rows_out += [
        {
            "path": f"  {name}",
            "ms_per_batch": side.wall / (N / BATCH) * 1e3,
            "pg_us_per_event": _us(side.pg_cpu, N),
            "py_us_per_event": _us(side.py_cpu, N),
        }
        for name, side in (await profile_statements(url, entries)).items()
    ]
    if LIVE_RATE > 0:
        live = await measure_live_latency(url, redis_url, make_events(LIVE_EVENTS, seed=11))
        rows_out.append({"path": f"live via Redis at {LIVE_RATE}/s", **live})
    report("bench_indexer", rows_out)


if __name__ == "__main__":
    with database_url_or_embedded(os.environ.get("DATABASE_URL")) as db_url, bench_redis_url() as r_url:
        anyio.run(main, db_url, r_url)
