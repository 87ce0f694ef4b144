"""Wiring the replayer's roles: the index consumer, and the scanning process's ledger, run
tracker, folder and scanner. Wiring only: the CLI (`workers.replayer.cli`) composes these with
the scan sources of `workers.replayer.loops`; nothing else imports this module."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import redis.asyncio as aioredis

from streams import (
    Backoff,
    Consumer,
    ConsumerConfig,
    Keys,
    Producer,
    ProducerConfig,
    read_backlog,
)
from workers.replayer.checkpoint import Checkpoint
from workers.replayer.config import ReplayerConfig
from workers.replayer.es import ElasticClient
from workers.replayer.fold import LedgerFolder
from workers.replayer.index import IndexHandler
from workers.replayer.ledger import Ledger, scan_lock
from workers.replayer.runs import RunTracker
from workers.replayer.scan import Scanner


@dataclass
class Indexing:
    """The index role: `consumer` is the component to run."""

    consumer: Consumer
    handler: IndexHandler


@dataclass
class Scanning:
    """The scan role: the folder's consumer is a component; the scanner is driven by a scan
    source (`workers.replayer.loops`); `runs` owns the run lifecycle."""

    folder_consumer: Consumer
    folder: LedgerFolder
    scanner: Scanner
    ledger: Ledger
    runs: RunTracker
    producer: Producer  # writes captains_log, blocking at the high-water mark


@contextlib.asynccontextmanager
async def elastic(config: ReplayerConfig) -> AsyncIterator[ElasticClient]:
    """An Elasticsearch client; credentials in ES_URL become basic auth and stay out of logs."""
    url = httpx.URL(config.es_url)
    auth = httpx.BasicAuth(url.username, url.password) if url.username else None
    bare = str(url.copy_with(username=None, password=None)) if url.username else config.es_url
    timeout = httpx.Timeout(config.es_timeout_s, connect=min(10.0, config.es_timeout_s))
    async with httpx.AsyncClient(timeout=timeout, auth=auth) as http:
        yield ElasticClient(http, bare, api_key=config.es_api_key)


def build_indexing(redis: aioredis.Redis, config: ReplayerConfig, es: ElasticClient) -> Indexing:
    keys = Keys(config.prefix)
    results = Producer(redis, ProducerConfig(keys.stream(config.results_stream), high_water=None))
    handler = IndexHandler(
        es,
        results,
        max_docs=config.bulk_max_docs,
        max_bytes=config.bulk_max_bytes,
        max_deliveries=config.max_deliveries,
    )
    consumer = Consumer(
        redis,
        ConsumerConfig(
            stream=keys.stream(config.stream),
            group=config.group,
            consumer=config.consumer,
            batch_size=config.bulk_max_docs,
            concurrency=config.concurrency,
            min_idle_ms=config.min_idle_ms,
            max_deliveries=config.max_deliveries,
            backoff=Backoff(base_s=0.5, cap_s=30.0),
        ),
        handler,
    )
    return Indexing(consumer, handler)


@contextlib.contextmanager
def scanning_ledger(config: ReplayerConfig) -> Iterator[Ledger]:
    """The ledger, held with the state directory's scan lock (one scanning process per directory)."""
    with scan_lock(config.state):
        ledger = Ledger(config.ledger_path)
        try:
            yield ledger
        finally:
            ledger.close()


def build_scanning(redis: aioredis.Redis, config: ReplayerConfig, ledger: Ledger) -> Scanning:
    keys = Keys(config.prefix)
    results_stream = keys.stream(config.results_stream)
    checkpoint = Checkpoint(config.checkpoint_path)
    runs = RunTracker(ledger, checkpoint, lambda: read_backlog(redis, results_stream))
    folder = LedgerFolder(ledger, checkpoint, runs)
    folder_consumer = Consumer(
        redis,
        ConsumerConfig(
            stream=results_stream,
            group=config.ledger_group,
            consumer=config.consumer,
            batch_size=500,
            concurrency=1,  # one SQLite writer
            min_idle_ms=config.min_idle_ms,
            max_deliveries=config.max_deliveries,
        ),
        folder,
    )

    producer = Producer(redis, ProducerConfig(keys.stream(config.stream), high_water=config.high_water))
    scanner = Scanner(
        redis,
        root=config.root,
        group=config.group,
        ledger=ledger,
        producer=producer,
        max_retries=config.max_retries,
        runs=runs,
    )
    return Scanning(folder_consumer, folder, scanner, ledger, runs, producer)
