"""Ingester listRepos -> repo_backfill rate, and backfiller records/s into firehose_backfill on a
100k-record devnet repo next to the raw pipelined-XADD rate of the same events (target >= 0.6).

The devnet runs in a child process so that its HTTP serving does not share this process' event
loop; its CAR is built and cached by a warm-up download before timing.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import cast

import anyio
import httpx
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Timer, bench_redis_url, report
from schemas import RepoJob, encode_entry
from streams import Entry, Keys
from workers.backfiller import BackfillerConfig
from workers.backfiller.worker import build_backfiller
from workers.ingester.config import IngesterConfig
from workers.ingester.worker import build_ingester

HUGE = int(os.environ.get("BENCH_HUGE_RECORDS", "100000"))
LIST_REPOS = int(os.environ.get("BENCH_LIST_REPOS", "5000"))
BATCH = 500


def start_devnet(*args: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    cmd = [sys.executable, "-m", "workers.cli", "devnet", "--firehose-rate", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


async def bench_listing(redis: aioredis.Redis, url: str) -> dict[str, object]:
    proc, net = start_devnet("--repos", str(LIST_REPOS), "--huge-repo-records", "0", "--seed", "9")
    try:
        config = IngesterConfig(
            redis_url=url, prefix=f"bl{os.getpid()}", mode="backfill", relay_hosts=(net["relay"],)
        )
        async with build_ingester(redis, config) as ingester:
            listing = ingester.listings[0]
            with Timer() as t:
                await listing.run_pass(recheck=False)
        return {
            "path": "ingester listRepos -> repo_backfill",
            "repos": listing.listed,
            "repos_per_s": listing.listed / t.seconds,
        }
    finally:
        proc.terminate()
        proc.wait()


async def bench_backfill(redis: aioredis.Redis, url: str) -> dict[str, object]:
    proc, net = start_devnet("--repos", "3", "--huge-repo-records", str(HUGE), "--seed", "9")
    prefix = f"bb{os.getpid()}"
    keys = Keys(prefix)
    try:
        did = await _huge_did(net)
        config = BackfillerConfig(
            redis_url=url,
            prefix=prefix,
            plc_url=net["plc"],
            batch_size=BATCH,
            firehose_high_water=10 * HUGE,
            allow_private_hosts=True,  # the devnet's PDS hosts are on loopback
        )
        async with build_backfiller(redis, config) as worker:
            job = Entry(
                keys.stream("repo_backfill"),
                "0-1",
                encode_entry("repo_backfill", RepoJob(did=did, host=net["relay"])),
                1,
            )
            await worker.handler.handle(job)  # warm-up: devnet builds and caches the CAR, DID cached
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            await redis.delete(keys.stream("firehose_backfill"))
            with Timer() as t:
                await worker.handler.handle(job)
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows = await redis.xrange(keys.stream("firehose_backfill"))
        events = cast("list[tuple[bytes, dict[bytes, bytes]]]", rows)  # a bytes client
        records = len(events) - 1
        raw = await _raw_xadd(redis, keys.stream("raw"), [f for _, f in events])
        await redis.delete(keys.stream("firehose_backfill"), keys.stream("raw"))
        rate = records / t.seconds
        return {
            "path": "backfiller getRepo -> firehose_backfill",
            "records": records,
            "raw_xadd_per_s": raw,
            "records_per_s": rate,
            "ratio": rate / raw,
            "target": 0.6,
            "max_rss_mb": rss_after / 1024,
            "rss_before_mb": rss_before / 1024,
        }
    finally:
        proc.terminate()
        proc.wait()


async def _huge_did(net: dict[str, str]) -> str:
    async with httpx.AsyncClient() as http:
        body = (
            await http.get(f"{net['relay']}/xrpc/com.atproto.sync.listRepos", params={"limit": 10})
        ).json()
        truth = (await http.get(f"{net['relay']}/truth")).content.splitlines()
    counts: dict[str, int] = {}
    for line in truth:
        doc = json.loads(line)
        if doc["type"] == "record":
            counts[doc["did"]] = counts.get(doc["did"], 0) + 1
    busiest: str = max((r["did"] for r in body["repos"]), key=lambda d: counts.get(d, 0))
    return busiest


async def _raw_xadd(redis: aioredis.Redis, stream: str, events: list[dict[bytes, bytes]]) -> float:
    """The same events, pre-encoded, in a plain loop of pipelined XADDs."""
    with Timer() as t:
        for start in range(0, len(events), BATCH):
            async with redis.pipeline(transaction=False) as pipe:
                for fields in events[start : start + BATCH]:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                await pipe.execute()
    return len(events) / t.seconds


async def main() -> None:
    with bench_redis_url() as url:
        redis = aioredis.Redis.from_url(url)
        rows = [await bench_listing(redis, url), await bench_backfill(redis, url)]
        await redis.aclose()
    report("backfill", rows)


if __name__ == "__main__":
    anyio.run(main)
