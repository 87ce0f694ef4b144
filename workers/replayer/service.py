"""Wiring the replayer's roles: the index consumer, the ledger folder, the scanner, and the loops
that `run` and `run-once` drive them with."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import httpx
import redis.asyncio as aioredis

from streams import (
    AdminError,
    Backoff,
    Consumer,
    ConsumerConfig,
    Keys,
    Producer,
    ProducerConfig,
    read_backlog,
)
from streams.admin import trim
from workers.replayer.checkpoint import Checkpoint
from workers.replayer.config import ReplayerConfig
from workers.replayer.es import ElasticClient, EsError
from workers.replayer.fold import LedgerFolder
from workers.replayer.index import IndexHandler
from workers.replayer.ledger import Ledger, scan_lock
from workers.replayer.scan import Scanner

log = logging.getLogger("streamfill.replayer")

# How long a scan waits for the folder to catch up with the results stream before reconciling.
DRAIN_TIMEOUT_S = 30.0


@dataclass
class Indexing:
    """The index role: `consumer` is the component to run."""

    consumer: Consumer
    handler: IndexHandler


@dataclass
class Scanning:
    """The scan role: the folder's consumer is a component; the scanner is driven by a loop."""

    folder_consumer: Consumer
    folder: LedgerFolder
    scanner: Scanner
    ledger: Ledger
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
    folder = LedgerFolder(ledger, checkpoint)
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

    async def drain_results() -> None:
        with anyio.move_on_after(DRAIN_TIMEOUT_S) as scope:
            while await read_backlog(redis, results_stream) > 0:
                with anyio.move_on_after(0.05):  # the folder's batches wake us; the poll is a fallback
                    await folder.changed.wait()
        if scope.cancelled_caught:
            log.warning("results not folded in time; reconciling with what is folded")

    producer = Producer(redis, ProducerConfig(keys.stream(config.stream), high_water=config.high_water))
    scanner = Scanner(
        redis,
        root=config.root,
        group=config.group,
        ledger=ledger,
        checkpoint=checkpoint,
        producer=producer,
        max_retries=config.max_retries,
        folder=folder,
        drain_results=drain_results,
    )
    return Scanning(folder_consumer, folder, scanner, ledger, producer)


async def trim_streams(redis: aioredis.Redis, config: ReplayerConfig) -> None:
    """Trim what every group has acknowledged from both streams (they would grow forever)."""
    keys = Keys(config.prefix)
    for name in (config.stream, config.results_stream):
        with contextlib.suppress(AdminError):
            await trim(redis, keys, keys.stream(name), audited=False)


async def wait_for_es(es: ElasticClient, *, timeout_s: float | None = None) -> bool:
    """Wait until Elasticsearch answers its health check (logging once while it does not)."""
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    attempt = 0
    with anyio.move_on_after(timeout_s):
        while True:
            try:
                await es.health()
                if attempt:
                    log.info("elasticsearch answers", extra={"es_url": es.url})
                return True
            except EsError as exc:
                if attempt == 0:
                    log.warning("waiting for elasticsearch", extra={"es_url": es.url, "error": str(exc)})
                attempt += 1
                await anyio.sleep(backoff.delay(attempt))
    return False
