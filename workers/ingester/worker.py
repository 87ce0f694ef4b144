"""Wiring the ingester: per relay a listing task and a host discovery task (INGESTER_DISCOVERY) and
a firehose follower, one label follower per labeler, each with its own producer (backpressure is
per target stream)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from atp.did import DidResolver
from atp.http import HttpClient
from atp.netpolicy import NetPolicy
from atp.subscribe import SUBSCRIBE_LABELS, SUBSCRIBE_REPOS, stream_url
from atp.xrpc import XrpcClient
from streams import (
    Component,
    Keys,
    PartitionedProducer,
    Producer,
    ProducerConfig,
    StreamNames,
    Throttle,
    default_consumer_name,
    host_key,
)
from workers._identity import IdentityCache
from workers._partitions import partitioning
from workers._throttle import live_keys, live_throttle, retune_throttle
from workers.ingester.config import IngesterConfig
from workers.ingester.discovery import HostDiscovery
from workers.ingester.eventstream import EventStreamSource, StreamTargets
from workers.ingester.firehose import AccountChecker, FirehoseConverter
from workers.ingester.labels import LabelConverter
from workers.ingester.listing import ListingSource


@dataclass
class Ingester:
    listings: list[ListingSource] = field(default_factory=list)
    discoveries: list[HostDiscovery] = field(default_factory=list)
    firehoses: list[EventStreamSource] = field(default_factory=list)
    labelers: list[EventStreamSource] = field(default_factory=list)
    throttle: Throttle | None = None
    producers: list[Producer] = field(default_factory=list)

    def retune(self, config: IngesterConfig) -> None:
        """Apply the live-tunable settings (workers/control): marks and the re-check interval."""
        for producer in self.producers:
            producer.retune(high_water=config.high_water_mark, low_water=config.low_water_mark)
        for listing in self.listings:
            listing.retune(config)
        for discovery in self.discoveries:
            discovery.retune(config)
        retune_throttle(self.throttle, config)

    @property
    def components(self) -> list[Component]:
        return [*self.listings, *self.discoveries, *self.firehoses, *self.labelers]


def _targets(keys: Keys, stream: str, host: str, config: IngesterConfig) -> StreamTargets:
    dlq = keys.dlq(keys.stream(stream))
    return StreamTargets(host, dlq, keys.gaps(stream, host), max_seq_step=config.max_seq_step)


@contextlib.asynccontextmanager
async def build_ingester(redis: aioredis.Redis, config: IngesterConfig) -> AsyncIterator[Ingester]:
    keys = Keys(config.prefix)
    mark = config.high_water_mark
    parts = partitioning(config.prefix, config.partitions)
    # Listing (repo_backfill) yields to live traffic; the live streams' own producers never wait on it.
    worker = default_consumer_name("ingester")
    throttle = live_throttle(redis, config, worker, live_keys(config.prefix, config.partitions))

    ingester = Ingester(throttle=throttle)

    def producer(stream: str) -> Producer:
        # Also for one partition: on Redis Cluster a batch, its `extra` entries and its cursor
        # may lie in different slots, and the partitioned producer writes the cursor last.
        made = PartitionedProducer(
            redis,
            ProducerConfig(keys.stream(stream), high_water=mark, low_water=config.low_water_mark),
            parts,
            wait_replicas=config.wait_replicas,
            wait_timeout_ms=config.wait_timeout_ms,
            throttle=throttle if stream == StreamNames.REPO_BACKFILL else None,
        )
        ingester.producers.append(made)
        return made

    # Relays, labelers and the PLC directory are configuration (trusted); did:web hosts and
    # redirects come from the network and are checked by the policy (atp.netpolicy).
    configured = [*config.relay_hosts, *config.labeler_hosts, config.plc_url]
    policy = NetPolicy(allow_private=config.allow_private_hosts).trusting(configured)
    async with HttpClient(policy, read_timeout_s=30.0) as http:
        xrpc = XrpcClient(http, timeout_s=30.0)
        # One cache: it verifies commit signatures (unless disabled) and finds the current PDS
        # that confirms an `#account` event saying a repo went inactive.
        cache = IdentityCache(redis, keys, DidResolver(http, plc_url=config.plc_url))
        identities = cache if config.verify_signatures else None
        accounts = AccountChecker(cache, xrpc)
        backfill = config.mode in ("all", "backfill")
        for relay in config.relay_hosts if backfill and config.discovery in ("relay", "both") else ():
            ingester.listings.append(
                ListingSource(
                    redis, keys, config, host_key(relay), producer(StreamNames.REPO_BACKFILL), xrpc, url=relay
                )
            )
        for relay in config.relay_hosts if backfill and config.discovery in ("hosts", "both") else ():
            jobs = producer(StreamNames.REPO_BACKFILL)
            ingester.discoveries.append(
                HostDiscovery(redis, keys, config, host_key(relay), jobs, xrpc, relay_url=relay)
            )
        for relay in config.relay_hosts if config.mode in ("all", "firehose") else ():
            host = host_key(relay)
            converter = FirehoseConverter(
                relay,
                keys.stream(StreamNames.FIREHOSE_LIVE),
                keys.stream(StreamNames.REPO_BACKFILL),
                identities,
                accounts=accounts,
            )
            ingester.firehoses.append(
                EventStreamSource(
                    redis,
                    stream_url(relay, SUBSCRIBE_REPOS),
                    keys.cursor(StreamNames.FIREHOSE_LIVE, host),
                    producer(StreamNames.FIREHOSE_LIVE),
                    converter,
                    _targets(keys, StreamNames.FIREHOSE_LIVE, host, config),
                    batch_size=config.batch_size,
                    batch_timeout_ms=config.batch_timeout_ms,
                    name=f"firehose:{host}",
                )
            )
        for labeler in config.labeler_hosts if config.mode in ("all", "labeler") else ():
            host = host_key(labeler)
            ingester.labelers.append(
                EventStreamSource(
                    redis,
                    stream_url(labeler, SUBSCRIBE_LABELS),
                    keys.cursor(StreamNames.LABEL_LIVE, host),
                    producer(StreamNames.LABEL_LIVE),
                    LabelConverter(labeler, keys.stream(StreamNames.LABEL_LIVE)),
                    _targets(keys, StreamNames.LABEL_LIVE, host, config),
                    batch_size=config.batch_size,
                    batch_timeout_ms=config.batch_timeout_ms,
                    name=f"labels:{host}",
                    initial_cursor=0,  # labels are state: a new subscriber wants the labeler's whole history
                )
            )
        yield ingester
