"""/readyz says why not, over HTTP, from real servers: warmup (with repo_backfill's progress),
lag (live entries of known age), dependency (a Redis / PostgreSQL that does not answer); and
`status` prints the same reasons."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from streams import Keys
from streams._http import serve_metrics
from streams._readiness import Check, Reason, evaluate, redis_check
from tests._support import xreadgroup
from workers._readiness import indexer_checks, postgres_check

pytestmark = pytest.mark.anyio


async def aged(redis: aioredis.Redis, stream: str, age_ms: int) -> None:
    seconds, micros = await redis.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    await redis.xadd(stream, {"n": "1"}, id=f"{now - age_ms}-0")


async def backfill_half_done(redis: aioredis.Redis, keys: Keys) -> None:
    """repo_backfill: 4 jobs, 2 read and acked by the backfillers' group; firehose_backfill: 1 unread."""
    jobs = keys.stream("repo_backfill")
    for i in range(4):
        await redis.xadd(jobs, {"repo": str(i)})
    await redis.xgroup_create(jobs, "repo_backfill_group", id="0")
    rows = await xreadgroup(redis, "repo_backfill_group", "b", {jobs: ">"}, count=2)
    await redis.xack(jobs, "repo_backfill_group", *[i for _, entries in rows for i, _ in entries])
    events = keys.stream("firehose_backfill")
    await redis.xadd(events, {"event": "{}"})
    await redis.xgroup_create(events, "firehose_group", id="0")


async def readyz(checks: Sequence[tuple[str, Check]], query: str = "") -> tuple[int, dict[str, Any]]:
    async def reasons() -> list[Reason]:
        return await evaluate(checks)

    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_metrics, "127.0.0.1", 0, lambda: True, reasons)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.get("/readyz" + query)
        tg.cancel_scope.cancel()
    return response.status_code, response.json()


async def test_readyz_reasons_of_an_indexer(
    redis_client: aioredis.Redis, redis_url: str, database_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    live = keys.stream("firehose_live")
    await aged(redis_client, live, 30_000)
    await redis_client.xgroup_create(live, "firehose_group", id="0")
    checks = indexer_checks(
        redis_client,
        database_url,
        prefix=prefix,
        partitions=1,
        live=[(live, "firehose_group")],
        max_lag_s=10.0,
    )
    status, body = await readyz(checks)
    assert status == 503 and body["ready"] is False
    [lag] = body["reasons"]
    assert lag["reason"] == "lag" and 30.0 <= lag["lag_s"] < 31.0 and lag["threshold_s"] == 10.0

    await backfill_half_done(redis_client, keys)
    status, body = await readyz(checks)
    by_kind = {r["reason"]: r for r in body["reasons"]}
    assert status == 503 and set(by_kind) == {"lag", "warmup"}
    assert by_kind["warmup"] == {
        "reason": "warmup",
        "progress_pct": 50.0,
        "remaining": 2,
        "remaining_events": 1,
    }
    # A probe that must not fail during a long backfill leaves warmup (and lag) out.
    assert await readyz(checks, "?ignore=warmup,lag") == (200, {"ready": True, "reasons": []})
    assert (await readyz(checks, "?ignore=warmup"))[0] == 503

    # The live lag caught up: only warmup is left.
    rows = await xreadgroup(redis_client, "firehose_group", "i", {live: ">"})
    await redis_client.xack(live, "firehose_group", *[i for _, entries in rows for i, _ in entries])
    status, body = await readyz(checks)
    assert status == 503 and [r["reason"] for r in body["reasons"]] == ["warmup"]

    # status prints the same reasons
    out = status_cli(redis_url, prefix)
    assert out.returncode == 0, out.stderr
    assert "readiness: not ready: warmup 50.0% (2 repo jobs, 1 events left)" in out.stdout
    await drain(redis_client, keys)


def status_cli(redis_url: str, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {"REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "status"], env=env, capture_output=True, text=True, timeout=60
    )


async def drain(redis: aioredis.Redis, keys: Keys) -> None:
    for stream, group in (("repo_backfill", "repo_backfill_group"), ("firehose_backfill", "firehose_group")):
        rows = await xreadgroup(redis, group, "c", {keys.stream(stream): ">"})
        ids = [i for _, entries in rows for i, _ in entries]
        if ids:
            await redis.xack(keys.stream(stream), group, *ids)


async def test_readyz_names_the_dependency_that_does_not_answer() -> None:
    dead_redis = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    nothing_there = "postgresql://nobody:wrong@127.0.0.1:1/none"
    checks = (("redis", redis_check(dead_redis)), ("postgresql", postgres_check(nothing_there)))
    status, body = await readyz(checks)
    assert status == 503
    assert [(r["reason"], r["dependency"]) for r in body["reasons"]] == [
        ("dependency", "redis"),
        ("dependency", "postgresql"),
    ]
    assert all(r["error"] for r in body["reasons"])
    await dead_redis.aclose()
