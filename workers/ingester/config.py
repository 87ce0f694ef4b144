"""Ingester configuration: a frozen dataclass with typed defaults, and its settings (rsky names)."""

from __future__ import annotations

from dataclasses import dataclass

from workers.settings import (
    BOOL,
    DEFAULT_GRACE_S,
    FLOAT,
    HOSTS,
    HTTP_URL,
    INT,
    Retired,
    Rule,
    Setting,
    Spec,
    Values,
    allow_private_hosts_setting,
    below,
    choice,
    partition_settings,
    process_settings,
    redis_settings,
    throttle_rule,
    throttle_settings,
)

MODES = ("all", "backfill", "firehose", "labeler")
DISCOVERY = ("both", "relay", "hosts")


@dataclass(frozen=True)
class IngesterConfig:
    """Everything the ingester needs; tests and benchmarks set only what they change."""

    redis_url: str | None = None
    prefix: str = ""
    partitions: int = 1
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000
    mode: str = "all"
    relay_hosts: tuple[str, ...] = ()
    labeler_hosts: tuple[str, ...] = ()
    high_water_mark: int = 100_000
    low_water_mark: int | None = None  # None: 90 % of the high mark
    batch_size: int = 500
    batch_timeout_ms: int = 1000
    max_consecutive_errors: int = 5
    skip_ahead: int = 1000
    # Largest step a firehose or label cursor may take from one frame to the next.
    max_seq_step: int = 10_000_000
    plc_url: str = "https://plc.directory"
    verify_signatures: bool = True
    # How often a finished listing looks for accounts created after its last cursor (rsky: 5 min).
    recheck_interval_s: float = 300.0
    list_limit: int = 1000
    # Where listings come from: the relay's listRepos, its listHosts then each PDS's listRepos, or both.
    discovery: str = "both"
    # PDS hosts paged at the same time (each with its own cursor and skip ledger).
    host_concurrency: int = 8
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_level: str = "info"
    grace_s: float = DEFAULT_GRACE_S
    redis_reconnect_s: float = 60.0
    # did:web hosts and redirects on non-public addresses are refused unless set (devnets).
    allow_private_hosts: bool = False
    # Bulk production yields to live traffic (streams/_throttle.py): pause above, resume below.
    throttle: bool = True
    throttle_live_lag_s: float = 2.0
    throttle_resume_lag_s: float = 1.0


def _has_hosts(v: Values) -> str | None:
    """A mode whose sources are all unconfigured would start and do nothing."""
    mode, relays, labelers = v["mode"], v["relay_hosts"], v["labeler_hosts"]
    if mode == "all" and not relays and not labelers:
        return "the ingester has nothing to do: set INGESTER_RELAY_HOSTS and/or INGESTER_LABELER_HOSTS"
    if mode in ("backfill", "firehose") and not relays:
        return f"INGESTER_MODE={mode} needs INGESTER_RELAY_HOSTS: with none, the ingester would do nothing"
    if mode == "labeler" and not labelers:
        return "INGESTER_MODE=labeler needs INGESTER_LABELER_HOSTS: with none, the ingester would do nothing"
    return None


_FIREHOSE = "that is rsky-firehose's; streamfill's ingester follows relays itself:"

SPEC: Spec[IngesterConfig] = Spec(
    "ingester",
    IngesterConfig,
    (
        *redis_settings(),
        *partition_settings(),
        Setting(
            "mode",
            "INGESTER_MODE",
            choice(*MODES),
            "all; backfill (listRepos), firehose (subscribeRepos) or labeler (subscribeLabels) only",
        ),
        Setting(
            "relay_hosts",
            "INGESTER_RELAY_HOSTS",
            HOSTS,
            "relays, comma-separated (https://bsky.network or bsky.network); a cursor key's {host} "
            "is the URL without its scheme",
            aliases=("RELAY_HOSTS",),
        ),
        Setting(
            "labeler_hosts",
            "INGESTER_LABELER_HOSTS",
            HOSTS,
            "labelers, comma-separated",
            aliases=("LABELER_HOSTS",),
        ),
        Setting(
            "high_water_mark",
            "INGESTER_HIGH_WATER_MARK",
            INT,
            "backpressure: writing to repo_backfill, firehose_live or label_live blocks while its "
            "backlog (lag + pending) is at this mark",
            minimum=1,
            maximum=1_000_000_000,
            live=True,
        ),
        Setting(
            "low_water_mark",
            "INGESTER_LOW_WATER_MARK",
            INT,
            "a blocked writer resumes below this backlog (at least 1: with 0 it would never resume)",
            minimum=1,
            maximum=1_000_000_000,
            optional=True,
            live=True,
            shown_default="90 % of the high-water mark",
        ),
        Setting(
            "batch_size",
            "INGESTER_BATCH_SIZE",
            INT,
            "firehose and label frames per batch (written atomically with their cursor)",
            minimum=1,
            maximum=100_000,
        ),
        Setting(
            "batch_timeout_ms",
            "INGESTER_BATCH_TIMEOUT_MS",
            INT,
            "an open batch is written after this long",
            minimum=1,
            maximum=600_000,
        ),
        Setting(
            "max_consecutive_errors",
            "INGESTER_MAX_CONSECUTIVE_ERRORS",
            INT,
            "listRepos error answers at one numeric cursor before it skips ahead (an unreachable "
            "relay is waited for, never skipped)",
            minimum=1,
            maximum=1000,
        ),
        Setting(
            "skip_ahead",
            "INGESTER_SKIP_AHEAD",
            INT,
            "how far a failing numeric listRepos cursor skips (the range is ledgered)",
            minimum=1,
            maximum=1_000_000_000,
        ),
        Setting(
            "max_seq_step",
            "INGESTER_MAX_SEQ_STEP",
            INT,
            "a firehose or label frame whose seq is more than this above the cursor (or not above "
            "it) is dead-lettered and never becomes the cursor",
            minimum=1,
            maximum=10**15,
        ),
        Setting(
            "plc_url", "PLC_URL", HTTP_URL, "PLC directory, to resolve DIDs for firehose signature checks"
        ),
        Setting(
            "verify_signatures",
            "INGESTER_VERIFY_SIGNATURES",
            BOOL,
            "verify firehose commit signatures",
        ),
        Setting(
            "recheck_interval_s",
            "INGESTER_RECHECK_SECS",
            FLOAT,
            "after a finished listing pass, page every host again from the start this often "
            "(seconds); only new or changed repos are enqueued",
            flag="--recheck-interval",
            minimum=1,
            maximum=7 * 86400,
            live=True,
        ),
        Setting(
            "list_limit",
            "INGESTER_LIST_LIMIT",
            INT,
            "listRepos page size",
            minimum=1,
            maximum=1000,
        ),
        Setting(
            "discovery",
            "INGESTER_DISCOVERY",
            choice(*DISCOVERY),
            "where backfill listings come from: relay (its listRepos), hosts (its listHosts, then "
            "each PDS's listRepos) or both; a repo found by several is enqueued once",
        ),
        Setting(
            "host_concurrency",
            "INGESTER_HOST_CONCURRENCY",
            INT,
            "PDS hosts whose listRepos is paged at the same time (discovery hosts or both)",
            minimum=1,
            maximum=10_000,
        ),
        allow_private_hosts_setting(),
        *throttle_settings(),
        *process_settings(),
    ),
    rules=(
        Rule("INGESTER_MODE has hosts to read", _has_hosts),
        below("low_water_mark", "high_water_mark"),
        throttle_rule(),
    ),
    retired=(
        Retired("FEEDGEN_SUBSCRIPTION_PATH", f"{_FIREHOSE} set INGESTER_RELAY_HOSTS"),
        Retired(
            "FEEDGEN_SUBSCRIPTION_ENDPOINT",
            f"{_FIREHOSE} it subscribes to subscribeRepos and subscribeLabels (INGESTER_MODE)",
        ),
        Retired(
            "FEEDGEN_SUBSCRIPTION_CURSOR",
            "the firehose cursor is kept in Redis, in firehose_live:cursor:<host> (set it with redis-cli)",
        ),
        Retired(
            "FEEDGEN_QUEUE_ENDPOINT",
            "events go to Redis streams, which `streamfill indexer` writes to PostgreSQL (DATABASE_URL)",
        ),
        Retired("RSKY_API_KEY", "no replacement: streamfill pushes nothing to a feed generator"),
    ),
)
