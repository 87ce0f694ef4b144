"""Backfiller CPU per repo on many small devnet repos, next to a raw baseline in the same run.

The devnet runs in a child process, so only this process' CPU is counted (`time.process_time`,
every thread). Three figures per round, alternating which runs first:

- raw: one pooled `httpx.AsyncClient`, a plain GET of each repo's CAR straight from its PDS
  (URLs known in advance) and `libipld.decode_car`, 8 at a time;
- cold: the real backfiller (consumer, handler, producer) on the same repos with an empty identity
  cache, so every repo costs a DID document and a getRepo;
- warm: the same again with the identity cache filled (one request per repo).

The per-repo overhead is separated from the per-record cost with one bigger repo backfilled
through the same handler: cpu = repos * overhead + records * per_record, two equations, two
unknowns. The target (issue #17) is <= 2 ms of overhead per repo.

    uv run python bench/bench_repos.py      # BENCH_REPOS=400 BENCH_BIG_RECORDS=20000 BENCH_ROUNDS=3
    BENCH_REPOS_PER_READ=1 uv run python bench/bench_repos.py   # one job per XREADGROUP
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import libipld
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_redis_url, report
from schemas import RepoJob, encode_entry
from streams import Entry, Keys
from workers.backfiller import BackfillerConfig
from workers.backfiller.worker import build_backfiller

REPOS = int(os.environ.get("BENCH_REPOS", "400"))
BIG = int(os.environ.get("BENCH_BIG_RECORDS", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# Repo jobs per read of the backfill stream; unset: the production default.
PER_READ = os.environ.get("BENCH_REPOS_PER_READ")
CONCURRENCY = 8


def start_devnet() -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    cmd = [
        sys.executable, "-m", "workers.cli", "devnet", "--firehose-rate", "0", "--seed", "9",
        "--repos", str(REPOS), "--pds-hosts", "4", "--huge-repo-records", str(BIG),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


async def world(net: dict[str, Any]) -> tuple[dict[str, str], dict[str, int]]:
    """{did: its getRepo URL} of every active repo, and {did: records} from the truth."""
    async with httpx.AsyncClient(timeout=60) as http:
        repos: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            body = (await http.get(f"{net['relay']}/xrpc/com.atproto.sync.listRepos", params=params)).json()
            repos += body["repos"]
            cursor = body.get("cursor")
            if not body["repos"] or not cursor:
                break
        urls = {}
        for repo in repos:
            if repo["active"]:
                doc = (await http.get(f"{net['plc']}/{repo['did']}")).json()
                pds = doc["service"][0]["serviceEndpoint"]
                urls[repo["did"]] = f"{pds}/xrpc/com.atproto.sync.getRepo?did={repo['did']}"
        counts: dict[str, int] = {}
        for line in (await http.get(f"{net['relay']}/truth")).content.splitlines():
            doc = json.loads(line)
            if doc["type"] == "record":
                counts[doc["did"]] = counts.get(doc["did"], 0) + 1
    return urls, counts


async def raw(urls: list[str]) -> float:
    """CPU seconds for plain pooled GETs + libipld.decode_car of every URL, 8 at a time."""
    limiter = anyio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(timeout=60) as http:

        async def one(url: str) -> None:
            async with limiter:
                response = await http.get(url)
                libipld.decode_car(response.content)

        started = time.process_time()
        async with anyio.create_task_group() as tg:
            for url in urls:
                tg.start_soon(one, url)
        return time.process_time() - started


async def ours(redis: aioredis.Redis, config: Any, dids: list[str], passes: int) -> list[float]:
    """CPU seconds of each pass of the real backfiller over `dids` (pass 1: empty identity cache)."""
    keys = Keys(config.prefix)
    stream = keys.stream("repo_backfill")
    out = []
    for _ in range(passes):
        await redis.delete(keys.stream("firehose_backfill"))
        for start in range(0, len(dids), 500):
            async with redis.pipeline(transaction=False) as pipe:
                for did in dids[start : start + 500]:
                    job = encode_entry("repo_backfill", RepoJob(did=did, host="bench"))
                    pipe.xadd(stream, job)  # type: ignore[arg-type]  # bytes field names: redis-py's stubs say str
                await pipe.execute()
        # A fresh worker per pass (a consumer run until idle stays stopped); the second pass finds
        # every DID document in the Redis identity cache, as another replica would.
        async with build_backfiller(redis, config) as worker:
            started = time.process_time()
            await worker.consumer.run_until_idle()
            out.append(time.process_time() - started)
    return out


async def big(redis: aioredis.Redis, config: Any, did: str) -> float:
    """CPU seconds of the handler on one big repo (identity cached, CAR built by the devnet)."""
    keys = Keys(config.prefix)
    async with build_backfiller(redis, config) as worker:
        job = Entry(
            keys.stream("repo_backfill"), "0-1", encode_entry("repo_backfill", RepoJob(did=did, host="b")), 1
        )
        await worker.handler.handle(job)  # warm-up
        started = time.process_time()
        await worker.handler.handle(job)
        return time.process_time() - started


def _solve(small: float, repos: int, records: int, big_cpu: float, big_records: int) -> tuple[float, float]:
    """(overhead per repo, cost per record) from small = repos*o + records*p, big = o + big_records*p."""
    per_record = (small - repos * big_cpu) / (records - repos * big_records)
    return big_cpu - big_records * per_record, per_record


async def main() -> None:
    proc, net = start_devnet()
    try:
        with bench_redis_url() as url:
            redis = aioredis.Redis.from_url(url)
            urls, counts = await world(net)
            big_did = max(urls, key=lambda d: counts.get(d, 0))
            small = [d for d in urls if d != big_did]
            records = sum(counts.get(d, 0) for d in small)
            await raw(list(urls.values()))  # warm-up: the devnet builds and caches every CAR
            rows = []
            for round_ in range(ROUNDS):
                # Production defaults but for the devnet: its PDS hosts are on loopback, and one
                # host serves 100 repos, so its politeness limits are raised.
                config = BackfillerConfig(
                    redis_url=url, prefix=f"br{os.getpid()}r{round_}", plc_url=net["plc"],
                    concurrency=CONCURRENCY, pds_rps=1000.0, firehose_high_water=10**9,
                    allow_private_hosts=True,
                )  # fmt: skip
                if PER_READ:
                    config = dataclasses.replace(config, repos_per_read=int(PER_READ))
                pair: dict[str, float] = {}
                if round_ % 2:
                    cold, warm = await ours(redis, config, small, 2)
                    pair["raw"] = await raw([urls[d] for d in small])
                else:
                    pair["raw"] = await raw([urls[d] for d in small])
                    cold, warm = await ours(redis, config, small, 2)
                big_cpu = await big(redis, config, big_did)
                overhead, per_record = _solve(warm, len(small), records, big_cpu, counts[big_did])
                rows.append(
                    {
                        "round": round_,
                        "repos": len(small),
                        "records_per_repo": records / len(small),
                        "raw_cpu_ms_per_repo": pair["raw"] / len(small) * 1000,
                        "cold_cpu_ms_per_repo": cold / len(small) * 1000,
                        "warm_cpu_ms_per_repo": warm / len(small) * 1000,
                        "ratio_warm_to_raw": warm / pair["raw"],
                        "warm_overhead_ms_per_repo": overhead * 1000,
                        "us_per_record": per_record * 1e6,
                    }
                )
                await redis.delete(*[k async for k in redis.scan_iter(match=f"{config.prefix}:*")])
            summary = {
                "path": "median of rounds",
                "cold_cpu_ms_per_repo": statistics.median(r["cold_cpu_ms_per_repo"] for r in rows),
                "warm_cpu_ms_per_repo": statistics.median(r["warm_cpu_ms_per_repo"] for r in rows),
                "raw_cpu_ms_per_repo": statistics.median(r["raw_cpu_ms_per_repo"] for r in rows),
                "warm_overhead_ms_per_repo": statistics.median(r["warm_overhead_ms_per_repo"] for r in rows),
                "target_overhead_ms": 2.0,
            }
            await redis.aclose()
    finally:
        proc.terminate()
        proc.wait()
    report("repos", [*rows, summary])


if __name__ == "__main__":
    anyio.run(main)
