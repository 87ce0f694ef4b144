"""Backfiller configuration: a frozen dataclass with typed defaults, and its settings (rsky names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from atp.blocks import DEFAULT_MEMORY_BYTES
from atp.xrpc import DEFAULT_MAX_RETRY_AFTER_S, DEFAULT_MIN_BYTES_PER_S
from streams import StreamNames, default_consumer_name
from workers.settings import (
    BOOL,
    DEFAULT_GRACE_S,
    FLOAT,
    HTTP_URL,
    INT,
    NAME,
    Setting,
    Spec,
    allow_private_hosts_setting,
    at_most,
    below,
    consumer_settings,
    differ,
    partition_settings,
    process_settings,
    redis_settings,
    throttle_rule,
    throttle_settings,
)

# 2 GiB: the largest real repos are a few hundred MB; the cap stops hostile servers streaming
# forever (and bounds the temporary file a repo's blocks spill to beyond repo_memory_bytes).
DEFAULT_MAX_REPO_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class BackfillerConfig:
    """Everything the backfiller needs; tests and benchmarks set only what they change."""

    redis_url: str | None = None
    prefix: str = ""
    partitions: int = 1
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000
    consumer: str = field(default_factory=partial(default_consumer_name, "backfiller"))
    group: str = "repo_backfill_group"
    concurrency: int = 8
    repos_per_read: int = 4
    min_idle_ms: int = 60_000
    max_deliveries: int = 5
    backfill_stream: str = StreamNames.REPO_BACKFILL
    firehose_stream: str = StreamNames.FIREHOSE_BACKFILL
    dlq_stream: str | None = None  # None: `<backfill_stream>:dlq`
    firehose_high_water: int = 100_000
    firehose_low_water: int | None = None  # None: 90 % of the high mark
    batch_size: int = 500
    http_timeout_s: float = 120.0
    retry_initial_backoff_ms: int = 1000
    retry_max_backoff_ms: int = 60_000
    pds_rps: float = 10.0
    pds_concurrency: int = 4
    skip_signature_verification: bool = False
    plc_url: str = "https://plc.directory"
    max_repo_bytes: int = DEFAULT_MAX_REPO_BYTES
    repo_memory_bytes: int = DEFAULT_MEMORY_BYTES
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_level: str = "info"
    grace_s: float = DEFAULT_GRACE_S
    redis_reconnect_s: float = 60.0
    # PDS endpoints, did:web hosts and redirects on non-public addresses are refused unless set.
    allow_private_hosts: bool = False
    # Bulk production yields to live traffic (streams/_throttle.py): pause above, resume below.
    throttle: bool = True
    throttle_live_lag_s: float = 2.0
    throttle_resume_lag_s: float = 1.0
    # A 429's Retry-After above this is capped (one answer must not park a PDS for a day).
    max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S
    # getRepo may run past http_timeout_s by one second per this many bytes received.
    min_download_bytes_per_s: float = DEFAULT_MIN_BYTES_PER_S


SPEC: Spec[BackfillerConfig] = Spec(
    "backfiller",
    BackfillerConfig,
    (
        *redis_settings(),
        *partition_settings(),
        *consumer_settings(
            "backfiller",
            "BACKFILLER",
            help={
                "group": "consumer group on the backfill stream",
                "concurrency": "repos downloaded at once per process",
                "max_deliveries": "deliveries of a job before it is dead-lettered",
            },
            max_deliveries_env="BACKFILLER_MAX_RETRIES",
            live_concurrency=True,
            aliases={"consumer": ("BACKFILLER_CONSUMER_NAME",), "group": ("BACKFILLER_CONSUMER_GROUP",)},
        ),
        Setting(
            "repos_per_read",
            "BACKFILLER_REPOS_PER_READ",
            INT,
            "repo jobs taken per read of the backfill stream, acked together (concurrency still bounds "
            "the repos worked on; up to concurrency x this many jobs are held by a process at once)",
            minimum=1,
            maximum=100,
        ),
        Setting(
            "backfill_stream",
            "BACKFILLER_BACKFILL_STREAM",
            NAME,
            "stream of repo jobs",
            aliases=("BACKFILLER_INPUT_STREAM",),
        ),
        Setting(
            "firehose_stream",
            "BACKFILLER_FIREHOSE_STREAM",
            NAME,
            "stream the record events go to",
            aliases=("BACKFILLER_OUTPUT_STREAM",),
        ),
        Setting(
            "dlq_stream",
            "BACKFILLER_DLQ_STREAM",
            NAME,
            "dead-letter stream of jobs",
            optional=True,
            shown_default="<backfill stream>:dlq",
        ),
        Setting(
            "firehose_high_water",
            "BACKFILLER_FIREHOSE_STREAM_HIGH_WATER_MARK",
            INT,
            "backpressure: writing to the firehose stream blocks while its backlog is at this mark",
            flag="--high-water-mark",
            minimum=1,
            maximum=1_000_000_000,
            live=True,
        ),
        Setting(
            "firehose_low_water",
            "BACKFILLER_FIREHOSE_STREAM_LOW_WATER_MARK",
            INT,
            "a blocked writer resumes below this backlog (at least 1: with 0 it would never resume)",
            flag="--low-water-mark",
            minimum=1,
            maximum=1_000_000_000,
            optional=True,
            live=True,
            shown_default="90 % of the high-water mark",
        ),
        Setting(
            "batch_size",
            "BACKFILLER_BATCH_SIZE",
            INT,
            "record events per XADD batch",
            minimum=1,
            maximum=100_000,
        ),
        Setting(
            "http_timeout_s",
            "BACKFILLER_HTTP_TIMEOUT_SECS",
            FLOAT,
            "getRepo: per-read timeout and the base of the overall deadline, in seconds (connect: 10 s)",
            flag="--http-timeout-secs",
            minimum=1,
            maximum=3600,
        ),
        Setting(
            "retry_initial_backoff_ms",
            "BACKFILLER_RETRY_INITIAL_BACKOFF_MS",
            INT,
            "first delay before a failed job is retried (it doubles, with jitter)",
            minimum=1,
            maximum=3_600_000,
        ),
        Setting(
            "retry_max_backoff_ms",
            "BACKFILLER_RETRY_MAX_BACKOFF_MS",
            INT,
            "longest delay between retries of a job",
            minimum=1,
            maximum=3_600_000,
        ),
        Setting(
            "pds_rps",
            "BACKFILLER_PDS_RPS",
            FLOAT,
            "getRepo requests per second per PDS host, per process",
            minimum=0.01,
            maximum=100_000,
            live=True,
        ),
        Setting(
            "pds_concurrency",
            "BACKFILLER_PDS_CONCURRENCY",
            INT,
            "concurrent downloads per PDS host, per process",
            minimum=1,
            maximum=1024,
            live=True,
        ),
        Setting(
            "skip_signature_verification",
            "BACKFILLER_SKIP_SIGNATURE_VERIFICATION",
            BOOL,
            "do not verify repo commit signatures",
        ),
        Setting("plc_url", "PLC_URL", HTTP_URL, "PLC directory (PDS endpoint and signing key of each DID)"),
        Setting(
            "max_repo_bytes",
            "BACKFILLER_MAX_REPO_BYTES",
            INT,
            "larger CARs (counted after content decoding) are dead-lettered at once (RepoTooLarge)",
            minimum=1024,
            maximum=2**40,
        ),
        Setting(
            "repo_memory_bytes",
            "BACKFILLER_REPO_MEMORY_BYTES",
            INT,
            "memory one repo's blocks may take while it is read, each block counted with its CID, index and "
            "object overhead (192 B); further blocks go to a temporary SQLite file (see Security)",
            minimum=0,
            maximum=2**40,
        ),
        Setting(
            "min_download_bytes_per_s",
            "BACKFILLER_MIN_DOWNLOAD_BYTES_PER_SEC",
            FLOAT,
            "a getRepo may run past the HTTP timeout by one second per this many bytes received, so a "
            "big repo that keeps flowing reaches the size cap instead of timing out (0: no extension)",
            flag="--min-download-bytes-per-sec",
            minimum=0,
            maximum=2**40,
        ),
        Setting(
            "max_retry_after_s",
            "BACKFILLER_MAX_RETRY_AFTER_SECS",
            FLOAT,
            "a 429's Retry-After above this many seconds is capped (shown per host in `status`)",
            flag="--max-retry-after-secs",
            minimum=1,
            maximum=86_400,
        ),
        allow_private_hosts_setting(),
        *throttle_settings(),
        *process_settings(metrics_aliases=("BACKFILLER_METRICS_PORT",)),
    ),
    rules=(
        below("firehose_low_water", "firehose_high_water"),
        at_most("retry_initial_backoff_ms", "retry_max_backoff_ms"),
        differ("backfill_stream", "firehose_stream"),
        throttle_rule(),
    ),
)
