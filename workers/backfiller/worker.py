"""Wiring: the `repo_backfill` consumer, the `firehose_backfill` producer, HTTP clients, limiter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis

from atp.did import DidResolver
from atp.http import HttpClient
from atp.netpolicy import NetPolicy
from atp.xrpc import XrpcClient
from streams import (
    Backoff,
    ConsumerConfig,
    Keys,
    PartitionedConsumer,
    PartitionedProducer,
    ProducerConfig,
    Throttle,
)
from workers._identity import IdentityCache
from workers._partitions import partitioning
from workers._throttle import live_keys, live_throttle, retune_throttle
from workers.backfiller.config import BackfillerConfig
from workers.backfiller.handler import BackfillHandler
from workers.backfiller.hosts import HostLimiter


@dataclass
class Backfiller:
    """The assembled worker: `consumer` is the component to run."""

    consumer: PartitionedConsumer
    handler: BackfillHandler
    producer: PartitionedProducer
    identities: IdentityCache
    limiter: HostLimiter
    throttle: Throttle | None = None

    def statistics(self) -> dict[str, object]:
        """What the heartbeat shows: the components' counters and the limits they run with."""
        return {
            "consumer": self.consumer.statistics(),
            "producer": self.producer.statistics(),
            "concurrency": self.consumer.config.concurrency,
            "high_water": self.producer.config.high_water,
            "throttle": self.throttle.statistics() if self.throttle is not None else None,
        }

    def retune(self, config: BackfillerConfig) -> None:
        """Apply the live-tunable settings (workers/control): concurrency, marks, per-PDS limits."""
        self.consumer.retune(concurrency=config.concurrency)
        self.handler.retune(config.concurrency)
        self.producer.retune(high_water=config.firehose_high_water, low_water=config.firehose_low_water)
        self.limiter.retune(config.pds_rps, config.pds_concurrency)
        retune_throttle(self.throttle, config)


@contextlib.asynccontextmanager
async def build_backfiller(redis: aioredis.Redis, config: BackfillerConfig) -> AsyncIterator[Backfiller]:
    keys = Keys(config.prefix)
    parts = partitioning(config.prefix, config.partitions, (config.backfill_stream, config.firehose_stream))
    # PDS endpoints, did:web hosts and redirects are data from the network: the policy checks
    # them. The PLC directory is configuration, so it is trusted (a private mirror works).
    policy = NetPolicy(allow_private=config.allow_private_hosts).trusting([config.plc_url])
    # One pool per host (atp.http); the limiter decides how many of its connections are in use.
    per_host = max(config.pds_concurrency, config.concurrency)
    async with HttpClient(
        policy, read_timeout_s=config.http_timeout_s, connections_per_host=per_host
    ) as http:
        xrpc = XrpcClient(http, timeout_s=config.http_timeout_s, max_retry_after_s=config.max_retry_after_s)
        resolver = DidResolver(http, plc_url=config.plc_url, web_scheme="https")
        producer = PartitionedProducer(
            redis,
            ProducerConfig(
                keys.stream(config.firehose_stream),
                high_water=config.firehose_high_water,
                low_water=config.firehose_low_water,
            ),
            parts,
            wait_replicas=config.wait_replicas,
            wait_timeout_ms=config.wait_timeout_ms,
            # Backfill writes yield to live traffic: they pause while live lag is high.
            throttle=live_throttle(
                redis, config, config.consumer, live_keys(config.prefix, config.partitions)
            ),
        )
        limiter = HostLimiter(config.pds_rps, config.pds_concurrency)
        identities = IdentityCache(redis, keys, resolver)
        handler = BackfillHandler(redis, keys, config, producer, identities, xrpc, limiter)
        consumer = PartitionedConsumer(
            redis,
            ConsumerConfig(
                stream=keys.stream(config.backfill_stream),
                group=config.group,
                consumer=config.consumer,
                # Several jobs per read (the handler bounds the repos worked on at once), and as
                # many handler slots as repos, so a slot held by a big repo stalls no other.
                batch_size=config.repos_per_read,
                concurrency=config.concurrency,
                min_idle_ms=config.min_idle_ms,
                max_deliveries=config.max_deliveries,
                backoff=Backoff(
                    base_s=config.retry_initial_backoff_ms / 1000, cap_s=config.retry_max_backoff_ms / 1000
                ),
                dlq_stream=keys.stream(config.dlq_stream) if config.dlq_stream else None,
            ),
            handler,
            parts.partition_keys(config.backfill_stream),
        )
        yield Backfiller(consumer, handler, producer, identities, limiter, producer.throttle)
