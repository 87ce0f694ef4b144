"""Wiring: one consumer per indexed stream, all sharing one handler and one connection pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis

from schemas import contract_for
from streams import Backoff, BatchHandler, ConsumerConfig, Keys, PartitionedConsumer, Priority, PriorityConfig
from workers._partitions import partitioning
from workers.indexer.config import LABEL_STREAM, LIVE_STREAMS, IndexerConfig
from workers.indexer.db import create_pool
from workers.indexer.handler import IndexerHandler
from workers.indexer.migrate import migrate


@dataclass
class Indexer:
    """The assembled worker: `consumers` are the components to run."""

    consumers: list[PartitionedConsumer]
    handler: IndexerHandler
    pool: Any
    priority: Priority | None = None

    def statistics(self) -> dict[str, object]:
        """What the heartbeat shows: counters, and the read size and concurrency in use."""
        first = self.consumers[0].config
        return {
            "consumers": [c.statistics() for c in self.consumers],
            "handler": self.handler.statistics(),
            "batch_size": first.batch_size,
            "concurrency": first.concurrency,
        }

    def retune(self, config: IndexerConfig) -> None:
        """Apply the live-tunable settings (workers/control): batch size and concurrency (a
        concurrency above the pool's size waits for connections)."""
        for consumer in self.consumers:
            consumer.retune(batch_size=config.batch_size, concurrency=config.concurrency)
        if self.priority is not None:
            self.priority.config = replace(self.priority.config, low_chunk=config.live_first_chunk)


# A bulk stream's short reads wait this long before the next (ConsumerConfig.linger_ms): while the
# backfill is fed slower than the indexers read it, batches of a few entries each would cost a
# transaction and a round of Redis calls apiece, in every replica (docs/performance.md, "Replicas").
BULK_LINGER_MS = 50


def build_consumers(
    redis: aioredis.Redis, config: IndexerConfig, handler: IndexerHandler, priority: Priority | None = None
) -> list[PartitionedConsumer]:
    """One consumer per stream in `config.consumed_streams` (per partition of each), in that
    stream's group; labels are never partitioned. With `priority`, live streams' handlers run
    first and the others' in the gaps."""

    def handler_for(stream: str) -> BatchHandler:
        reading = handler.reading(contract_for(stream))
        if priority is None:
            return reading
        return priority.high(reading) if stream in LIVE_STREAMS else priority.low(reading)

    keys = Keys(config.prefix)
    record_streams = [s for s in config.consumed_streams if s != LABEL_STREAM]
    parts = partitioning(config.prefix, config.partitions, record_streams)
    return [
        PartitionedConsumer(
            redis,
            ConsumerConfig(
                stream=keys.stream(stream),
                group=config.group_for(stream),
                consumer=config.consumer,
                batch_size=config.batch_size,
                concurrency=config.concurrency,
                min_idle_ms=config.min_idle_ms,
                max_deliveries=config.max_deliveries,
                # A database outage can last minutes: back off up to a minute between attempts.
                backoff=Backoff(base_s=0.5, cap_s=60.0),
                linger_ms=0 if stream in LIVE_STREAMS else BULK_LINGER_MS,
            ),
            handler_for(stream),
            parts.partition_keys(stream) if stream != LABEL_STREAM else [keys.stream(stream)],
        )
        for stream in config.consumed_streams
    ]


@contextlib.asynccontextmanager
async def build_indexer(
    redis: aioredis.Redis, database_url: str, config: IndexerConfig
) -> AsyncIterator[Indexer]:
    """Open the pool, apply pending migrations, and assemble the consumers."""
    pool = await create_pool(database_url, max_size=config.pool_size)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        handler = IndexerHandler(pool)
        priority = Priority(PriorityConfig(low_chunk=config.live_first_chunk)) if config.live_first else None
        yield Indexer(build_consumers(redis, config, handler, priority), handler, pool, priority)
    finally:
        await pool.close()
