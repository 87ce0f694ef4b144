"""Indexer configuration: read once from the environment (rsky-compatible names) or flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from streams import default_consumer_name
from workers._env import env_str

DEFAULT_STREAMS = "firehose_live,firehose_backfill,label_live"
LABEL_STREAM = "label_live"


@dataclass(frozen=True)
class IndexerConfig:
    """Everything the indexer needs; built at the CLI edge and passed down."""

    database_url: str | None
    redis_url: str | None
    prefix: str
    streams: tuple[str, ...]
    group: str
    label_group: str
    consumer: str
    concurrency: int
    batch_size: int
    pool_max_size: int
    min_idle_ms: int
    max_deliveries: int
    metrics_port: int | None

    def group_for(self, stream: str) -> str:
        """Labels are read by their own group; firehose streams share `group`."""
        return self.label_group if stream == LABEL_STREAM else self.group


# (flag, attribute, environment variable)
_FLAGS = (
    ("--database-url", "database_url", "DATABASE_URL"),
    ("--redis-url", "redis_url", "REDIS_URL"),
    ("--streams", "streams", "INDEXER_STREAMS"),
    ("--group", "group", "INDEXER_GROUP"),
    ("--label-group", "label_group", "INDEXER_LABEL_GROUP"),
    ("--consumer", "consumer", "INDEXER_CONSUMER"),
    ("--concurrency", "concurrency", "INDEXER_CONCURRENCY"),
    ("--batch-size", "batch_size", "INDEXER_BATCH_SIZE"),
    ("--pool-size", "pool_size", "DB_POOL_MAX_SIZE"),
    ("--prefix", "prefix", "STREAMFILL_PREFIX"),
    ("--metrics-port", "metrics_port", "METRICS_PORT"),
    ("--min-idle-ms", "min_idle_ms", "INDEXER_MIN_IDLE_MS"),
    ("--max-deliveries", "max_deliveries", "INDEXER_MAX_DELIVERIES"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags mirroring the environment variables (a flag wins over its variable)."""
    for flag, attr, env in _FLAGS:
        p.add_argument(flag, dest=attr, default=None, help=f"(env {env})")


def from_env(args: argparse.Namespace) -> IndexerConfig:
    """The configuration: flags first, then the environment, then defaults."""

    def pick(attr: str, env: str, default: str) -> str:
        value = getattr(args, attr, None)
        return str(value) if value is not None else env_str(env, default)

    raw_streams = pick("streams", "INDEXER_STREAMS", DEFAULT_STREAMS)
    streams = tuple(s.strip() for s in raw_streams.split(",") if s.strip())
    concurrency = _int(pick("concurrency", "INDEXER_CONCURRENCY", "2"), "INDEXER_CONCURRENCY")
    metrics = pick("metrics_port", "METRICS_PORT", "")
    # Every handler task holds one connection while it applies a batch.
    default_pool = str(max(2, concurrency * len(streams)))
    return IndexerConfig(
        database_url=pick("database_url", "DATABASE_URL", "") or None,
        redis_url=pick("redis_url", "REDIS_URL", "") or None,
        prefix=pick("prefix", "STREAMFILL_PREFIX", ""),
        streams=streams or tuple(DEFAULT_STREAMS.split(",")),
        group=pick("group", "INDEXER_GROUP", "firehose_group"),
        label_group=pick("label_group", "INDEXER_LABEL_GROUP", "label_group"),
        consumer=pick("consumer", "INDEXER_CONSUMER", default_consumer_name("indexer")),
        concurrency=concurrency,
        batch_size=_int(pick("batch_size", "INDEXER_BATCH_SIZE", "500"), "INDEXER_BATCH_SIZE"),
        pool_max_size=_int(pick("pool_size", "DB_POOL_MAX_SIZE", default_pool), "DB_POOL_MAX_SIZE"),
        min_idle_ms=_int(pick("min_idle_ms", "INDEXER_MIN_IDLE_MS", "60000"), "INDEXER_MIN_IDLE_MS"),
        # Only entries that fail by themselves count: a database outage retries without using up
        # deliveries (Retry(counted=False)), so this bounds poison entries, not outages.
        max_deliveries=_int(pick("max_deliveries", "INDEXER_MAX_DELIVERIES", "5"), "INDEXER_MAX_DELIVERIES"),
        metrics_port=_int(metrics, "METRICS_PORT") if metrics else None,
    )


def _int(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"streamfill: {name} must be an integer, got {raw!r}") from None
