"""Replayer configuration: a frozen dataclass with typed defaults, and its settings (`REPLAYER_*`,
`ES_URL`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from streams import StreamNames, default_consumer_name
from workers.settings import (
    DEFAULT_GRACE_S,
    DIRECTORY,
    FLOAT,
    HTTP_URL,
    INT,
    NAME,
    TEXT,
    Rule,
    Setting,
    Spec,
    Values,
    consumer_settings,
    differ,
    process_settings,
    redis_settings,
)

# Elasticsearch's own guidance: bulk requests of a few MB; 5 MB stays far below the default
# http.max_content_length (100 MB) even for unusually large log entries.
DEFAULT_BULK_MAX_BYTES = 5 * 1024 * 1024
STATE_DIR_NAME = ".replayer"

# The subcommands that read files, and those that talk to Elasticsearch.
_FILES = frozenset({"scan", "run", "run-once", "status"})
_ES = frozenset({"index", "run", "run-once"})


@dataclass(frozen=True)
class ReplayerConfig:
    """Everything the replayer's roles need; tests set only what they change."""

    redis_url: str | None = None
    prefix: str = ""
    es_url: str = "http://127.0.0.1:9200"
    es_api_key: str = ""
    root: Path = Path("telemetry/captains_log")
    state_dir: Path | None = None  # None: <root>/.replayer
    consumer: str = field(default_factory=partial(default_consumer_name, "replayer"))
    group: str = "es_group"
    concurrency: int = 2
    min_idle_ms: int = 60_000
    max_deliveries: int = 5
    ledger_group: str = "ledger_group"
    stream: str = StreamNames.CAPTAINS_LOG
    results_stream: str = StreamNames.CAPTAINS_LOG_RESULTS
    interval_s: float = 600.0
    max_retries: int = 3
    cleanup_days: float = 7.0
    bulk_max_docs: int = 500
    bulk_max_bytes: int = DEFAULT_BULK_MAX_BYTES
    high_water: int = 20_000
    es_timeout_s: float = 30.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_level: str = "info"
    grace_s: float = DEFAULT_GRACE_S
    redis_reconnect_s: float = 60.0

    @property
    def state(self) -> Path:
        """The state directory: the SQLite ledger and the scan lock."""
        return self.state_dir if self.state_dir is not None else self.root / STATE_DIR_NAME

    @property
    def ledger_path(self) -> Path:
        return self.state / "replayer.sqlite3"

    @property
    def checkpoint_path(self) -> Path:
        return self.root / "es_backfill_checkpoint.json"


def _root_exists(v: Values) -> str | None:
    """A root that does not exist is a mistake: nothing is created there, no empty pass runs."""
    root = v["root"]
    if isinstance(root, Path) and not root.is_dir():
        where = "" if root.is_absolute() else f" (relative to {Path.cwd()})"
        what = "is not a directory" if root.exists() else "does not exist"
        return f"{v.shown('root')}{where} {what}: set REPLAYER_ROOT to the Captain's Log directory"
    return None


SPEC: Spec[ReplayerConfig] = Spec(
    "replayer",
    ReplayerConfig,
    (
        *redis_settings(),
        Setting(
            "es_url",
            "ES_URL",
            HTTP_URL,
            "Elasticsearch (https://user:password@host:9200 for basic auth; kept out of logs)",
            secret=True,
            roles=_ES,
        ),
        Setting(
            "es_api_key",
            "ES_API_KEY",
            TEXT,
            "Elasticsearch API key, sent as `Authorization: ApiKey`",
            roles=_ES,
            shown_default="none",
        ),
        Setting(
            "root",
            "REPLAYER_ROOT",
            DIRECTORY,
            "the Captain's Log directory (captures/, CL-*.json and the checkpoint file); it must "
            "exist, a relative path is relative to the working directory",
            roles=_FILES,
        ),
        Setting(
            "state_dir",
            "REPLAYER_STATE_DIR",
            DIRECTORY,
            "directory of the SQLite ledger and the scan lock (created when missing)",
            optional=True,
            roles=_FILES,
            shown_default=f"<REPLAYER_ROOT>/{STATE_DIR_NAME}",
        ),
        *consumer_settings(
            "replayer",
            "REPLAYER",
            help={
                "group": "consumer group of the index role",
                "concurrency": "concurrent _bulk requests per index process",
                "max_deliveries": "deliveries of a document before it is dead-lettered",
            },
        ),
        Setting("ledger_group", "REPLAYER_LEDGER_GROUP", NAME, "consumer group reading the results stream"),
        Setting("stream", "REPLAYER_STREAM", NAME, "stream of documents to index"),
        Setting("results_stream", "REPLAYER_RESULTS_STREAM", NAME, "stream of indexing results"),
        Setting(
            "interval_s",
            "REPLAYER_INTERVAL",
            FLOAT,
            "seconds between replay passes of `run`",
            flag="--interval",
            minimum=0.1,
            maximum=7 * 86400,
            live=True,
        ),
        Setting(
            "max_retries",
            "REPLAYER_MAX_RETRIES",
            INT,
            "passes that retry a failed file",
            minimum=0,
            maximum=1000,
        ),
        Setting(
            "cleanup_days",
            "REPLAYER_CLEANUP_DAYS",
            FLOAT,
            "runs older than this many days are deleted from the ledger",
            minimum=0,
            maximum=36500,
        ),
        Setting(
            "bulk_max_docs",
            "REPLAYER_BULK_MAX_DOCS",
            INT,
            "documents per _bulk request (and per read)",
            minimum=1,
            maximum=100_000,
            live=True,
        ),
        Setting(
            "bulk_max_bytes",
            "REPLAYER_BULK_MAX_BYTES",
            INT,
            "bytes per _bulk request",
            minimum=1024,
            maximum=2**31,
            live=True,
        ),
        Setting(
            "high_water",
            "REPLAYER_STREAM_HIGH_WATER_MARK",
            INT,
            "backpressure: the scan blocks while the document stream's backlog is at this mark",
            flag="--high-water-mark",
            minimum=1,
            maximum=1_000_000_000,
            live=True,
        ),
        Setting(
            "es_timeout_s",
            "REPLAYER_ES_TIMEOUT_SECS",
            FLOAT,
            "timeout of one Elasticsearch call, in seconds",
            flag="--es-timeout-secs",
            minimum=0.1,
            maximum=3600,
            roles=_ES,
        ),
        *process_settings(),
    ),
    rules=(
        Rule("REPLAYER_ROOT is an existing directory", _root_exists, attrs=("root",)),
        differ("stream", "results_stream"),
    ),
)
