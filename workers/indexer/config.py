"""Indexer configuration: a frozen dataclass with typed defaults, and its settings (rsky names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from streams import StreamNames, default_consumer_name
from workers.settings import (
    BOOL,
    DEFAULT_GRACE_S,
    INT,
    NAME,
    NAMES,
    POSTGRES_URL,
    Retired,
    Rule,
    Setting,
    Spec,
    Values,
    choice,
    consumer_settings,
    partition_settings,
    process_settings,
    ready_settings,
    redis_settings,
)

DEFAULT_STREAMS = (StreamNames.FIREHOSE_LIVE, StreamNames.FIREHOSE_BACKFILL, StreamNames.LABEL_LIVE)
LABEL_STREAM = StreamNames.LABEL_LIVE
# Read first (INDEXER_LIVE_FIRST): every other stream (firehose_backfill) is bulk.
LIVE_STREAMS = (StreamNames.FIREHOSE_LIVE, StreamNames.LABEL_LIVE)
MODES = ("all", "stream", "label")


def _consumed(mode: str, streams: tuple[str, ...]) -> tuple[str, ...]:
    """rsky's INDEXER_MODE: `stream` leaves out the label stream, `label` reads only that."""
    if mode == "stream":
        return tuple(s for s in streams if s != LABEL_STREAM)
    if mode == "label":
        return (LABEL_STREAM,)
    return streams


@dataclass(frozen=True)
class IndexerConfig:
    """Everything the indexer needs; built at the CLI edge and passed down."""

    database_url: str | None = None
    redis_url: str | None = None
    prefix: str = ""
    partitions: int = 1
    mode: str = "all"
    streams: tuple[str, ...] = DEFAULT_STREAMS
    consumer: str = field(default_factory=partial(default_consumer_name, "indexer"))
    group: str = "firehose_group"
    label_group: str = "label_group"
    concurrency: int = 2
    min_idle_ms: int = 60_000
    # Only entries that fail by themselves count: a database outage retries without using up
    # deliveries (Retry(counted=False)), so this bounds poison entries, not outages.
    max_deliveries: int = 5
    batch_size: int = 500
    # Live batches first, bulk (backfill) batches in the gaps (streams/_priority.py).
    live_first: bool = True
    live_first_chunk: int = 100
    ready_max_lag_s: float = 10.0
    pool_max_size: int | None = None  # None: one connection per handler task
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_level: str = "info"
    grace_s: float = DEFAULT_GRACE_S
    redis_reconnect_s: float = 60.0

    def group_for(self, stream: str) -> str:
        """Labels are read by their own group; firehose streams share `group`."""
        return self.label_group if stream == LABEL_STREAM else self.group

    @property
    def consumed_streams(self) -> tuple[str, ...]:
        """The streams this indexer reads: `streams`, narrowed by `mode`."""
        return _consumed(self.mode, self.streams)

    @property
    def pool_size(self) -> int:
        # Every handler task holds one connection while it applies a batch.
        return self.pool_max_size or max(2, self.concurrency * len(self.consumed_streams))


def _reads_something(v: Values) -> str | None:
    streams = v["streams"]
    if isinstance(streams, tuple) and not _consumed(str(v["mode"]), streams):
        return f"{v.shown('mode')} leaves nothing of {v.shown('streams')} to index"
    return None


SPEC: Spec[IndexerConfig] = Spec(
    "indexer",
    IndexerConfig,
    (
        Setting(
            "database_url",
            "DATABASE_URL",
            POSTGRES_URL,
            "PostgreSQL (postgresql://user:password@host:5432/db; the password is masked in messages)",
            optional=True,
            secret=True,
            shown_default="none: an embedded PostgreSQL for development",
        ),
        *redis_settings(),
        *partition_settings(producer=False),
        Setting(
            "mode",
            "INDEXER_MODE",
            choice(*MODES),
            "rsky's modes: all streams; stream (all but label_live); label (label_live only)",
        ),
        Setting("streams", "INDEXER_STREAMS", NAMES, "streams to index, comma-separated"),
        *consumer_settings(
            "indexer",
            "INDEXER",
            help={
                "group": "consumer group of the firehose streams",
                "concurrency": "handler tasks (batches in flight) per stream",
                "max_deliveries": "deliveries of an entry before it is dead-lettered (database outages do "
                "not count)",
            },
            live_concurrency=True,
        ),
        Setting("label_group", "INDEXER_LABEL_GROUP", NAME, "consumer group of label_live"),
        Setting(
            "batch_size",
            "INDEXER_BATCH_SIZE",
            INT,
            "entries per read and per transaction",
            minimum=1,
            maximum=100_000,
            live=True,
        ),
        Setting(
            "live_first",
            "INDEXER_LIVE_FIRST",
            BOOL,
            "live streams first: a firehose_backfill batch never starts while a firehose_live or "
            "label_live batch is applied, and while live traffic flows backfill batches are applied "
            "one at a time in small chunks, so live events never wait behind backfill batches",
        ),
        Setting(
            "live_first_chunk",
            "INDEXER_LIVE_FIRST_CHUNK",
            INT,
            "with INDEXER_LIVE_FIRST, backfill events per transaction while live traffic flows: smaller "
            "keeps live latency lower, larger keeps backfill throughput higher (docs/performance.md)",
            minimum=1,
            maximum=100_000,
            live=True,
        ),
        Setting(
            "pool_max_size",
            "DB_POOL_MAX_SIZE",
            INT,
            "PostgreSQL connection pool size",
            flag="--pool-size",
            minimum=1,
            maximum=1000,
            optional=True,
            shown_default="max(2, concurrency × streams)",
        ),
        *ready_settings(),
        *process_settings(),
    ),
    rules=(Rule("INDEXER_MODE leaves a stream of INDEXER_STREAMS to index", _reads_something),),
    retired=(
        Retired(
            "DB_POOL_MIN_IDLE",
            "the pool opens connections as batches need them, up to DB_POOL_MAX_SIZE; unset it",
        ),
        Retired(
            "ENABLE_DID_RESOLUTION",
            "the indexer does not resolve DIDs (it stores what the events carry); unset it",
            harmless=frozenset({"false", "0", "no", "off"}),
        ),
    ),
)
