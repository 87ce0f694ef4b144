"""Wiring: the `repo_backfill` consumer, the `firehose_backfill` producer, HTTP clients, limiter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import redis.asyncio as aioredis

from atp.did import DidResolver
from atp.xrpc import XrpcClient
from streams import Backoff, Consumer, ConsumerConfig, Keys, Producer, ProducerConfig
from workers._identity import IdentityCache
from workers.backfiller.config import BackfillerConfig
from workers.backfiller.handler import BackfillHandler
from workers.backfiller.hosts import HostLimiter


@dataclass
class Backfiller:
    """The assembled worker: `consumer` is the component to run."""

    consumer: Consumer
    handler: BackfillHandler
    producer: Producer


@contextlib.asynccontextmanager
async def build_backfiller(redis: aioredis.Redis, config: BackfillerConfig) -> AsyncIterator[Backfiller]:
    keys = Keys(config.prefix)
    limits = httpx.Limits(max_connections=max(16, config.concurrency * 2), max_keepalive_connections=32)
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(config.http_timeout_s, connect=10.0), limits=limits, follow_redirects=False
    ) as http:
        xrpc = XrpcClient(http)
        resolver = DidResolver(http, plc_url=config.plc_url, web_scheme="https")
        producer = Producer(
            redis,
            ProducerConfig(
                keys.stream(config.firehose_stream),
                high_water=config.firehose_high_water,
                low_water=config.firehose_low_water,
            ),
        )
        limiter = HostLimiter(config.pds_rps, config.pds_concurrency)
        handler = BackfillHandler(
            redis, keys, config, producer, IdentityCache(redis, keys, resolver), xrpc, limiter
        )
        consumer = Consumer(
            redis,
            ConsumerConfig(
                stream=keys.stream(config.backfill_stream),
                group=config.group,
                consumer=config.consumer,
                batch_size=1,  # one repo per handler call: concurrency is in repos
                concurrency=config.concurrency,
                min_idle_ms=config.min_idle_ms,
                max_deliveries=config.max_deliveries,
                backoff=Backoff(
                    base_s=config.retry_initial_backoff_ms / 1000, cap_s=config.retry_max_backoff_ms / 1000
                ),
                dlq_stream=keys.stream(config.dlq_stream) if config.dlq_stream else None,
            ),
            handler,
        )
        yield Backfiller(consumer, handler, producer)
