"""The Redis-streams runtime: consumer groups, producers with backpressure, reclaim, dead-letter,
retry policies, trimming, operator actions, worker lifecycle and metrics.

Knows nothing about AT Protocol, PostgreSQL or Elasticsearch.
"""

from streams._admin import (
    ConsumerInfo,
    GroupInfo,
    StreamInfo,
    TrimPlan,
    audit,
    dlq_list,
    dlq_purge,
    dlq_replay,
    drain,
    list_streams,
    operator_name,
    prune_consumers,
    reset_group,
    safe_trim_id,
    skip_ledgers,
    stream_info,
    trim,
    trim_stream,
)
from streams._cluster import (
    DEFAULT_FAILOVER_TIMEOUT_S,
    ClusterClient,
    cluster_retries,
    connect_cluster,
    is_cluster,
    parse_cluster_setting,
)
from streams._consumer import Consumer, ConsumerConfig, ConsumerStats
from streams._deadletter import DLQ_META, ERROR_CAP, dead_letter_fields
from streams._embedded import redis_url_or_embedded, start_embedded_valkey
from streams._embedded_cluster import EmbeddedCluster, EmbeddedClusterOptions
from streams._entries import EntryState, entry_states
from streams._errors import (
    AdminError,
    ClusterStartError,
    GroupError,
    GroupExists,
    NoGroup,
    RedisUnavailable,
    ReplicationLagError,
    StreamsError,
    UnsupportedServer,
    translate,
)
from streams._keys import CURSOR_DONE, Keys, default_consumer_name, dlq_key
from streams._lag import GroupLag, group_lags, lag_seconds
from streams._ledger import SkippedRange, record_skip, resolve_skipped, skipped_ranges
from streams._logging import configure_logging
from streams._partitioned import (
    PartitionedConsumer,
    PartitionedProducer,
    Partitioning,
    partition_index,
)
from streams._priority import Priority, PriorityConfig, PriorityStats
from streams._producer import Mark, Producer, ProducerConfig, ProducerStats, read_backlog
from streams._retry import Backoff, SkipAhead, SkipDecision, advance, classify, is_permanent
from streams._server import ServerInfo, connect, connect_auto, detect_server
from streams._slots import Slots
from streams._supervise import is_redis_blip, supervise
from streams._throttle import Pace, Throttle, ThrottleConfig, ThrottleStats, throttled_states
from streams._types import DONE, BatchHandler, DeadLetter, Done, Entry, EntryHandler, Outcome, Retry
from streams._worker import Component, WorkerOptions, run_worker

__all__ = [
    "CURSOR_DONE",
    "DEFAULT_FAILOVER_TIMEOUT_S",
    "DLQ_META",
    "DONE",
    "ERROR_CAP",
    "AdminError",
    "Backoff",
    "BatchHandler",
    "ClusterClient",
    "ClusterStartError",
    "Component",
    "Consumer",
    "ConsumerConfig",
    "ConsumerInfo",
    "ConsumerStats",
    "DeadLetter",
    "Done",
    "EmbeddedCluster",
    "EmbeddedClusterOptions",
    "Entry",
    "EntryHandler",
    "EntryState",
    "GroupError",
    "GroupExists",
    "GroupInfo",
    "GroupLag",
    "Keys",
    "Mark",
    "NoGroup",
    "Outcome",
    "Pace",
    "PartitionedConsumer",
    "PartitionedProducer",
    "Partitioning",
    "Priority",
    "PriorityConfig",
    "PriorityStats",
    "Producer",
    "ProducerConfig",
    "ProducerStats",
    "RedisUnavailable",
    "ReplicationLagError",
    "Retry",
    "ServerInfo",
    "SkipAhead",
    "SkipDecision",
    "SkippedRange",
    "Slots",
    "StreamInfo",
    "StreamsError",
    "Throttle",
    "ThrottleConfig",
    "ThrottleStats",
    "TrimPlan",
    "UnsupportedServer",
    "WorkerOptions",
    "advance",
    "audit",
    "classify",
    "cluster_retries",
    "configure_logging",
    "connect",
    "connect_auto",
    "connect_cluster",
    "dead_letter_fields",
    "default_consumer_name",
    "detect_server",
    "dlq_key",
    "dlq_list",
    "dlq_purge",
    "dlq_replay",
    "drain",
    "entry_states",
    "group_lags",
    "is_cluster",
    "is_permanent",
    "is_redis_blip",
    "lag_seconds",
    "list_streams",
    "operator_name",
    "parse_cluster_setting",
    "partition_index",
    "prune_consumers",
    "read_backlog",
    "record_skip",
    "redis_url_or_embedded",
    "reset_group",
    "resolve_skipped",
    "run_worker",
    "safe_trim_id",
    "skip_ledgers",
    "skipped_ranges",
    "start_embedded_valkey",
    "stream_info",
    "supervise",
    "throttled_states",
    "translate",
    "trim",
    "trim_stream",
]
