"""`PartitionedConsumer` (issue #16): one `Consumer` per partition of a logical stream, each with
its own group state, pending list, reclaim and DLQ `<partition>:dlq` in the partition's slot,
sharing one handler whose calls over all partitions are bounded by the configured concurrency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus

from streams._consumer import Consumer
from streams._consumer_config import ConsumerConfig, ConsumerStats
from streams._keys import dlq_key
from streams._types import BatchHandler, Entry, Outcome


class _Bounded:
    """The shared handler behind one limiter: at most `concurrency` calls over all partitions.

    A batch waiting here is pending and its lease is renewed by its consumer (the lease task
    runs around the handler call), so waiting never lets it be stolen. The handler sees the
    logical stream's key in `Entry.stream` (what it decodes by), not the partition's.
    """

    def __init__(self, handler: BatchHandler, limiter: anyio.CapacityLimiter, stream: str) -> None:
        self._handler = handler
        self._limiter = limiter
        self._stream = stream

    async def __call__(self, entries: Sequence[Entry]) -> Sequence[Outcome]:
        stream = self._stream
        logical = [e._replace(stream=stream) for e in entries]
        async with self._limiter:
            return await self._handler(logical)


class PartitionedConsumer:
    """One `Consumer` per partition of a logical stream, in the same group, sharing a handler.

    Every replica reads every partition (each partition's consumer reads only when one of its
    own slots is free; the handler calls of all partitions share `config.concurrency`). Versus
    leasing partitions to replicas: nothing to rebalance when replicas join or die, a dead
    replica's pending entries are taken over per partition by the existing XAUTOCLAIM reclaim,
    and no partition starves while any replica lives; the cost is N reads per replica per
    block interval when idle (docs/cluster.md).
    """

    def __init__(
        self, redis: aioredis.Redis, config: ConsumerConfig, handler: BatchHandler, partitions: Sequence[str]
    ) -> None:
        self.config = config
        self.partitions = list(partitions)
        self._limiter: anyio.CapacityLimiter | None = None
        if len(self.partitions) == 1 and self.partitions[0] == config.stream:
            bounded: BatchHandler = handler
        else:
            self._limiter = anyio.CapacityLimiter(config.concurrency)
            bounded = _Bounded(handler, self._limiter, config.stream)
        self.consumers = [
            Consumer(
                redis,
                replace(
                    config,
                    stream=key,
                    # A DLQ of the partition, in its slot: dead-letter + ack stay one MULTI.
                    dlq_stream=(
                        dlq_key(key)
                        if key != config.stream or config.dlq_stream is None
                        else config.dlq_stream
                    ),
                ),
                bounded,
            )
            for key in self.partitions
        ]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            for consumer in self.consumers:
                await tg.start(consumer.run)
            task_status.started()

    async def run_until_idle(self) -> None:
        async with anyio.create_task_group() as tg:
            for consumer in self.consumers:
                tg.start_soon(consumer.run_until_idle)

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()

    def retune(self, *, batch_size: int | None = None, concurrency: int | None = None) -> None:
        """Change every partition's read size and the shared handler limit (a live override)."""
        self.config = replace(
            self.config,
            batch_size=self.config.batch_size if batch_size is None else batch_size,
            concurrency=self.config.concurrency if concurrency is None else concurrency,
        )
        if self._limiter is not None and concurrency is not None:
            self._limiter.total_tokens = concurrency
        for consumer in self.consumers:
            consumer.retune(batch_size=batch_size, concurrency=concurrency)

    def statistics(self) -> ConsumerStats:
        parts = [c.statistics() for c in self.consumers]
        c = self.config

        def total(name: str) -> int:
            return sum(int(getattr(s, name)) for s in parts)

        last = next((s.last_error for s in parts if s.last_error), "")
        return ConsumerStats(
            c.stream,
            c.group,
            c.consumer,
            total("acked"),
            total("retried"),
            total("dead_lettered"),
            total("reclaimed"),
            total("in_flight"),
            total("scheduled_retries"),
            last,
        )
