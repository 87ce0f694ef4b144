"""A consumer process for the kill/SIGTERM tests: records work in Redis, so the test can see it.

argv: REDIS_URL STREAM GROUP CONSUMER MODE [GRACE_S]
MODE "hang": the first batch marks itself started and never finishes (the test SIGKILLs us, or
SIGTERMs us with a GRACE_S after which the hung batch is abandoned).
MODE "work": each batch marks itself started, waits until the test sets `<stream>:release`,
then records its ids as done (the test SIGTERMs us mid-batch).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import anyio

from streams import DONE, Consumer, ConsumerConfig, Entry, Outcome, WorkerOptions, connect, run_worker


async def main(url: str, stream: str, group: str, name: str, mode: str, grace: str = "") -> int:
    redis = connect(url)

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        await redis.rpush(f"{stream}:started", *[e.id for e in entries])
        if mode == "hang":
            await anyio.sleep_forever()
        while not await redis.exists(f"{stream}:release"):
            await anyio.sleep(0.01)
        await redis.sadd(f"{stream}:done", *[e.id for e in entries])
        return [DONE] * len(entries)

    consumer = Consumer(
        redis, ConsumerConfig(stream=stream, group=group, consumer=name, batch_size=5, concurrency=2), handler
    )
    options = WorkerOptions(name=name, grace_s=float(grace) if grace else None)
    return await run_worker(redis, [consumer], options)


if __name__ == "__main__":
    url, stream, group, name, mode, *grace = sys.argv[1:7]
    sys.exit(anyio.run(main, url, stream, group, name, mode, grace[0] if grace else ""))
