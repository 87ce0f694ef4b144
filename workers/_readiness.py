"""What each worker's `/readyz` checks (streams/_readiness.py), and `status`'s readiness line.

Every worker: Redis answers. The indexer also: PostgreSQL answers, its live streams are not
behind by more than READY_MAX_LAG_S (`lag`), and no backfill is in progress (`warmup`, with
repo_backfill's progress): until then the database it writes is not complete.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import redis.asyncio as aioredis

from streams import Check, Keys, Reason, StreamNames, lag_check, redis_check, warmup_check
from workers._partitions import partitioning
from workers._throttle import LIVE_STREAMS

# A probe's own connection: the pool's may all be busy with batches, which is no outage.
CONNECT_TIMEOUT_S = 1.5


def postgres_check(database_url: str) -> Check:
    async def check() -> list[Reason]:
        conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        return []

    return check


def backfill_keys(prefix: str, partitions: int) -> tuple[list[str], list[str]]:
    """(repo_backfill's keys, firehose_backfill's keys): what `warmup` measures."""
    parts = partitioning(prefix, partitions)
    jobs, records = StreamNames.REPO_BACKFILL, StreamNames.FIREHOSE_BACKFILL
    return parts.partition_keys(jobs), parts.partition_keys(records)


def base_checks(redis: aioredis.Redis) -> tuple[tuple[str, Check], ...]:
    return (("redis", redis_check(redis)),)


def indexer_checks(
    redis: aioredis.Redis,
    database_url: str,
    *,
    prefix: str,
    partitions: int,
    live: Sequence[tuple[str, str]],
    max_lag_s: float,
) -> tuple[tuple[str, Check], ...]:
    """Redis, PostgreSQL, the lag of `live` (stream key, group) pairs, and the backfill's progress."""
    jobs, events = backfill_keys(prefix, partitions)
    return (
        *base_checks(redis),
        ("postgresql", postgres_check(database_url)),
        ("redis", lag_check(redis, live, max_lag_s)),
        ("redis", warmup_check(redis, jobs, events)),
    )


async def status_reasons(
    redis: aioredis.Redis, keys: Keys, jobs: Sequence[str], events: Sequence[str], max_lag_s: float
) -> list[Reason]:
    """What `status` reports: warmup and live lag (every group of the live streams' keys found)."""
    from streams import evaluate
    from streams.admin import list_streams, logical_stream

    live = [
        (key, "")
        for key in await list_streams(redis, keys)
        if logical_stream(keys, key) in {keys.stream(s) for s in LIVE_STREAMS}
    ]
    checks = (("redis", warmup_check(redis, jobs, events)), ("redis", lag_check(redis, live, max_lag_s)))
    return await evaluate(checks)
