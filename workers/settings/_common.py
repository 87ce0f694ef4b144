"""Settings every worker shares, declared once: the Redis connection, the process (logs, metrics,
shutdown), and the consumer-group settings of every consuming worker.

Each config dataclass has the matching fields (`redis_url`, `prefix`, `metrics_port`,
`log_level`, `grace_s`; `consumer`, `group`, `concurrency`, `min_idle_ms`, `max_deliveries` for
consumers), with its own defaults.
"""

from __future__ import annotations

from collections.abc import Mapping

from workers.settings._declare import Rule, Setting, below
from workers.settings._kinds import BOOL, FLOAT, INT, LOG_LEVEL, NAME, PREFIX, REDIS_URL, TEXT

# Deployments give a stopping worker 60 s (compose stop_grace_period, Kubernetes
# terminationGracePeriodSeconds); the worker's own deadline ends well before its SIGKILL.
DEFAULT_GRACE_S = 50.0


def redis_settings() -> tuple[Setting, ...]:
    """REDIS_URL and STREAMFILL_PREFIX (fields `redis_url`, `prefix`)."""
    return (
        Setting(
            "redis_url",
            "REDIS_URL",
            REDIS_URL,
            "Redis 7+ / Valkey 8+ (redis://, rediss:// for TLS, unix://; a password in it is masked "
            "in messages)",
            optional=True,
            secret=True,
            shown_default="none: an embedded Valkey for development",
        ),
        Setting("prefix", "STREAMFILL_PREFIX", PREFIX, "key prefix: with p, every key is p:<name>"),
    )


def partition_settings(*, producer: bool = True) -> tuple[Setting, ...]:
    """STREAMFILL_PARTITIONS (field `partitions`) and, for writers, STREAMFILL_WAIT_REPLICAS and
    STREAMFILL_WAIT_TIMEOUT_MS (`wait_replicas`, `wait_timeout_ms`): partitioned streams
    (docs/cluster.md)."""
    partitions = Setting(
        "partitions",
        "STREAMFILL_PARTITIONS",
        INT,
        "partitions of each stream whose entries carry a DID (repo_backfill, firehose_live, "
        "firehose_backfill); 1 keeps one stream per name; every worker of a deployment must use "
        "the same number",
        # Not --partitions: `streamfill status --partitions` shows each partition.
        flag="--partition-count",
        minimum=1,
        maximum=1024,
    )
    if not producer:
        return (partitions,)
    return (
        partitions,
        Setting(
            "wait_replicas",
            "STREAMFILL_WAIT_REPLICAS",
            INT,
            "on Redis Cluster: a write is acknowledged (cursor advanced, job acked) only once this "
            "many replicas of each master it wrote to have it (WAIT); 0 = off",
            minimum=0,
            maximum=16,
        ),
        Setting(
            "wait_timeout_ms",
            "STREAMFILL_WAIT_TIMEOUT_MS",
            INT,
            "how long a write waits for its replicas before it fails (and is retried)",
            minimum=1,
            maximum=60_000,
        ),
    )


def process_settings(*, metrics_aliases: tuple[str, ...] = ()) -> tuple[Setting, ...]:
    """METRICS_PORT, METRICS_HOST, STREAMFILL_LOG_LEVEL and STREAMFILL_GRACE_SECS (`metrics_port`,
    `metrics_host`, `log_level`, `grace_s`)."""
    return (
        Setting(
            "metrics_port",
            "METRICS_PORT",
            INT,
            "serve /metrics, /healthz and /readyz on this port (on METRICS_HOST)",
            aliases=metrics_aliases,
            minimum=1,
            maximum=65535,
            optional=True,
            shown_default="none: no HTTP server",
        ),
        Setting(
            "metrics_host",
            "METRICS_HOST",
            TEXT,
            "address /metrics listens on: loopback unless set (the container image sets 0.0.0.0)",
        ),
        Setting(
            "log_level",
            "STREAMFILL_LOG_LEVEL",
            LOG_LEVEL,
            "log level of the JSON logs on stderr (RUST_LOG is read too, when it is one level)",
            aliases=("RUST_LOG",),
            live=True,
        ),
        Setting(
            "grace_s",
            "STREAMFILL_GRACE_SECS",
            FLOAT,
            "after SIGTERM, seconds to finish in-flight work; what is left then stays pending for "
            "the next start (keep it below the orchestrator's grace period)",
            flag="--grace-secs",
            minimum=5,
            maximum=3600,
        ),
    )


def consumer_settings(
    kind: str,
    env_prefix: str,
    *,
    help: Mapping[str, str],
    max_deliveries_env: str | None = None,
    aliases: Mapping[str, tuple[str, ...]] | None = None,
    bounds: Mapping[str, tuple[int, int]] | None = None,
    live_concurrency: bool = False,
) -> tuple[Setting, ...]:
    """The consumer-group settings of a consuming worker (`consumer`, `group`, `concurrency`,
    `min_idle_ms`, `max_deliveries`) under `<env_prefix>_*`; `help` says what concurrency means;
    `live_concurrency` when the worker applies a live override of it."""
    more = aliases or {}
    limits = {"concurrency": (1, 1024), **(bounds or {})}
    deliveries_env = max_deliveries_env or f"{env_prefix}_MAX_DELIVERIES"
    return (
        Setting(
            "consumer",
            f"{env_prefix}_CONSUMER",
            NAME,
            "consumer name: stable per replica and unique (a restarted replica re-reads its own "
            "pending entries)",
            aliases=more.get("consumer", ()),
            shown_default=f"{kind}-<hostname>",
        ),
        Setting(
            "group",
            f"{env_prefix}_GROUP",
            NAME,
            help.get("group", "consumer group"),
            aliases=more.get("group", ()),
        ),
        Setting(
            "concurrency",
            f"{env_prefix}_CONCURRENCY",
            INT,
            help["concurrency"],
            minimum=limits["concurrency"][0],
            maximum=limits["concurrency"][1],
            live=live_concurrency,
        ),
        Setting(
            "min_idle_ms",
            f"{env_prefix}_MIN_IDLE_MS",
            INT,
            "pending entries idle this long are reclaimed by other consumers (a third of it is "
            "the lease renewal interval of running handlers)",
            # Below a second the lease would be renewed in a busy loop.
            minimum=1000,
            maximum=7 * 86_400_000,
        ),
        Setting(
            "max_deliveries",
            deliveries_env,
            INT,
            help.get("max_deliveries", "deliveries of an entry before it is dead-lettered"),
            flag="--" + deliveries_env.removeprefix(env_prefix + "_").lower().replace("_", "-"),
            minimum=1,
            maximum=1000,
        ),
    )


def throttle_settings() -> tuple[Setting, ...]:
    """THROTTLE_ENABLED, THROTTLE_LIVE_LAG_S and THROTTLE_RESUME_LAG_S (fields `throttle`,
    `throttle_live_lag_s`, `throttle_resume_lag_s`): bulk production yields to live traffic.
    Add `throttle_rule()` to the spec's rules."""
    return (
        Setting(
            "throttle",
            "THROTTLE_ENABLED",
            BOOL,
            "slow down and pause backfill and replay production while the live streams "
            "(firehose_live, label_live: every group) fall behind",
        ),
        Setting(
            "throttle_live_lag_s",
            "THROTTLE_LIVE_LAG_S",
            FLOAT,
            "pause backfill and replay production while live lag (the age of the oldest live entry "
            "some group has not acknowledged) is above this many seconds",
            minimum=0.1,
            maximum=86_400,
            live=True,
        ),
        Setting(
            "throttle_resume_lag_s",
            "THROTTLE_RESUME_LAG_S",
            FLOAT,
            "a paused producer resumes once live lag is below this many seconds; between the two "
            "thresholds writes are slowed down",
            minimum=0,
            maximum=86_400,
            live=True,
        ),
    )


def ready_settings() -> tuple[Setting, ...]:
    """READY_MAX_LAG_S (field `ready_max_lag_s`): /readyz and `status` say `lag` above it."""
    return (
        Setting(
            "ready_max_lag_s",
            "READY_MAX_LAG_S",
            FLOAT,
            "/readyz answers not ready (reason `lag`) while the live streams are behind by more than "
            "this many seconds (the age of their oldest unacknowledged entry)",
            minimum=0.1,
            maximum=86_400,
        ),
    )


def throttle_rule() -> Rule:
    return below("throttle_resume_lag_s", "throttle_live_lag_s")


def allow_private_hosts_setting() -> Setting:
    """STREAMFILL_ALLOW_PRIVATE_HOSTS (field `allow_private_hosts`): the SSRF policy's switch."""
    return Setting(
        "allow_private_hosts",
        "STREAMFILL_ALLOW_PRIVATE_HOSTS",
        BOOL,
        "accept PDS endpoints, did:web hosts (and their ports) and redirect targets on loopback, "
        "private, link-local and other non-public addresses: only for a local devnet",
    )
