"""Runtime overhead: Producer vs raw pipelined XADD, Consumer vs a raw XREADGROUP+XACK loop.

Targets (2 cores): producer >= 0.85 of raw, consumer >= 0.8 of raw. Each pair runs in the same
process against the same server, alternating, best of ROUNDS.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import anyio
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Timer, bench_redis_url, report
from streams import DONE, Consumer, ConsumerConfig, Entry, Outcome, Producer, ProducerConfig

N = int(os.environ.get("BENCH_ENTRIES", "100000"))
BATCH = 500
ROUNDS = 3
PAYLOAD = {"event": b'{"type":"create","seq":-1,"did":"did:plc:abcdefghijklmnopqrstuvwx",'
           b'"rev":"3l3qo2vutsw2b",'
           b'"collection":"app.bsky.feed.like","rkey":"3l3qo2vuowo2b","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",'
           b'"record":{"$type":"app.bsky.feed.like","createdAt":"2024-01-01T00:00:00Z"}}'}  # fmt: skip


async def raw_xadd(r: aioredis.Redis, stream: str) -> float:
    with Timer() as t:
        for _ in range(N // BATCH):
            async with r.pipeline(transaction=False) as pipe:
                for _ in range(BATCH):
                    pipe.xadd(stream, PAYLOAD)  # type: ignore[arg-type]
                await pipe.execute()
    return N / t.seconds


async def runtime_xadd(r: aioredis.Redis, stream: str) -> float:
    await r.xgroup_create(stream, "g", id="$", mkstream=True)  # a group, so the lag check is real
    producer = Producer(r, ProducerConfig(stream, high_water=10 * N))
    batch = [PAYLOAD] * BATCH
    with Timer() as t:
        for _ in range(N // BATCH):
            await producer.send(batch)  # type: ignore[arg-type]
    return N / t.seconds


async def raw_consume(r: aioredis.Redis, stream: str) -> float:
    await r.xgroup_create(stream, "raw", id="0")
    done = 0
    with Timer() as t:
        while done < N:
            # a bytes client on RESP2: [[stream, [(id, fields), ...]]], or nothing when it times out
            read = await r.xreadgroup("raw", "c", {stream: ">"}, count=BATCH, block=100)
            reply = cast("list[list[Any]]", read)
            ids = [i for i, _ in reply[0][1]] if reply else []
            if ids:
                await r.xack(stream, "raw", *ids)
                done += len(ids)
    return N / t.seconds


async def runtime_consume(r: aioredis.Redis, stream: str) -> float:
    config = ConsumerConfig(
        stream, "rt", "c", batch_size=BATCH, concurrency=2, block_ms=100, group_start_id="0"
    )
    seen = 0

    async def noop(entries: Sequence[Entry]) -> Sequence[Outcome]:
        nonlocal seen
        seen += len(entries)
        if seen >= N:
            consumer.stop()  # like the raw loop, stop as soon as everything was handled
        return [DONE] * len(entries)

    consumer = Consumer(r, config, noop)
    with Timer() as t:
        await consumer.run()
    assert seen == N, seen
    return N / t.seconds


async def main() -> None:
    with bench_redis_url() as url:
        r = aioredis.Redis.from_url(url)
        best = {"raw_xadd": 0.0, "producer": 0.0, "raw_consume": 0.0, "consumer": 0.0}
        for round_ in range(ROUNDS):
            base = f"bench:{os.getpid()}:{round_}"
            await r.delete(f"{base}:a", f"{base}:b")
            best["raw_xadd"] = max(best["raw_xadd"], await raw_xadd(r, f"{base}:a"))
            best["producer"] = max(best["producer"], await runtime_xadd(r, f"{base}:b"))
            best["raw_consume"] = max(best["raw_consume"], await raw_consume(r, f"{base}:a"))
            best["consumer"] = max(best["consumer"], await runtime_consume(r, f"{base}:a"))
            await r.delete(f"{base}:a", f"{base}:b")
        await r.aclose()
    report(
        "streams",
        [
            {"path": "producer", "raw_per_s": best["raw_xadd"], "runtime_per_s": best["producer"],
             "ratio": best["producer"] / best["raw_xadd"], "target": 0.85},
            {"path": "consumer", "raw_per_s": best["raw_consume"], "runtime_per_s": best["consumer"],
             "ratio": best["consumer"] / best["raw_consume"], "target": 0.8},
        ],
    )  # fmt: skip


if __name__ == "__main__":
    anyio.run(main)
