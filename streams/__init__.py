"""The Redis-streams runtime: consumer groups, producers with backpressure, reclaim, dead-letter,
retry policies, trimming, operator actions, worker lifecycle and metrics.

Knows nothing about AT Protocol, PostgreSQL or Elasticsearch.
"""

from streams._cluster import (
    DEFAULT_FAILOVER_TIMEOUT_S,
    ClusterClient,
    cluster_retries,
    connect_cluster,
    is_cluster,
    parse_cluster_setting,
)
from streams._cluster_node import EmbeddedClusterOptions, Node
from streams._consumer import Consumer
from streams._consumer_config import ConsumerConfig, ConsumerStats
from streams._deadletter import DLQ_META, ERROR_CAP, dead_letter_fields
from streams._embedded import redis_url_or_embedded, start_embedded_valkey
from streams._embedded_cluster import EmbeddedCluster
from streams._entries import EntryState, entry_states
from streams._errors import (
    AdminError,
    ClusterStartError,
    GroupError,
    GroupExists,
    NoGroup,
    RedisUnavailable,
    ReplicationLagError,
    SourceError,
    StreamsError,
    UnsupportedServer,
    translate,
)
from streams._keys import CURSOR_DONE, Keys, StreamNames, default_consumer_name, dlq_key, host_key
from streams._lag import GroupLag, group_lags, lag_seconds
from streams._ledger import SkippedRange, record_skip, resolve_skipped, skipped_ranges
from streams._logging import configure_logging
from streams._partitioned import PartitionedProducer
from streams._partitioned_consumer import PartitionedConsumer
from streams._priority import Priority, PriorityConfig, PriorityStats
from streams._producer import Fields, Mark, Producer, ProducerConfig, ProducerStats, read_backlog
from streams._readiness import Check, Reason, evaluate, lag_check, redis_check, warmup_check
from streams._retry import Backoff, SkipAhead, SkipDecision, advance, classify, is_permanent
from streams._routing import Partitioning, partition_index
from streams._server import ServerInfo, connect, connect_auto, detect_server
from streams._slots import Slots
from streams._source import Outlet, RunnerConfig, Source, SourceBatch, SourceRunner, SourceStats
from streams._supervise import is_redis_blip, supervise
from streams._throttle import Pace, Throttle, ThrottleConfig, ThrottleStats, throttled_states
from streams._types import DONE, BatchHandler, DeadLetter, Done, Entry, EntryHandler, Outcome, Retry, id_key
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
    "Check",
    "ClusterClient",
    "ClusterStartError",
    "Component",
    "Consumer",
    "ConsumerConfig",
    "ConsumerStats",
    "DeadLetter",
    "Done",
    "EmbeddedCluster",
    "EmbeddedClusterOptions",
    "Entry",
    "EntryHandler",
    "EntryState",
    "Fields",
    "GroupError",
    "GroupExists",
    "GroupLag",
    "Keys",
    "Mark",
    "NoGroup",
    "Node",
    "Outcome",
    "Outlet",
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
    "Reason",
    "RedisUnavailable",
    "ReplicationLagError",
    "Retry",
    "RunnerConfig",
    "ServerInfo",
    "SkipAhead",
    "SkipDecision",
    "SkippedRange",
    "Slots",
    "Source",
    "SourceBatch",
    "SourceError",
    "SourceRunner",
    "SourceStats",
    "StreamNames",
    "StreamsError",
    "Throttle",
    "ThrottleConfig",
    "ThrottleStats",
    "UnsupportedServer",
    "WorkerOptions",
    "advance",
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
    "entry_states",
    "evaluate",
    "group_lags",
    "host_key",
    "id_key",
    "is_cluster",
    "is_permanent",
    "is_redis_blip",
    "lag_check",
    "lag_seconds",
    "parse_cluster_setting",
    "partition_index",
    "read_backlog",
    "record_skip",
    "redis_check",
    "redis_url_or_embedded",
    "resolve_skipped",
    "run_worker",
    "skipped_ranges",
    "start_embedded_valkey",
    "supervise",
    "throttled_states",
    "translate",
    "warmup_check",
]
