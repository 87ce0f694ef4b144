"""Operator actions on streams and consumer groups: what `streamfill status|groups|consumers|trim|
dlq`, the control commands and the readiness checks use (the runtime itself is `streams`).

Every action that changes state writes an audit entry (`audit`), with the operator's name.
"""

from streams._admin import (
    ConsumerInfo,
    GroupInfo,
    StreamInfo,
    drain,
    list_streams,
    prune_consumers,
    reset_group,
    skip_ledgers,
    stream_info,
)
from streams._audit import audit, operator_name
from streams._dlq_admin import count_replayed, dlq_list, dlq_purge, dlq_replay
from streams._partition_admin import (
    LogicalStreamInfo,
    logical_stream,
    merge,
    partition_number,
    partitions_of,
)
from streams._trim import TrimPlan, safe_trim_id, trim, trim_stream

__all__ = [
    "ConsumerInfo",
    "GroupInfo",
    "LogicalStreamInfo",
    "StreamInfo",
    "TrimPlan",
    "audit",
    "count_replayed",
    "dlq_list",
    "dlq_purge",
    "dlq_replay",
    "drain",
    "list_streams",
    "logical_stream",
    "merge",
    "operator_name",
    "partition_number",
    "partitions_of",
    "prune_consumers",
    "reset_group",
    "safe_trim_id",
    "skip_ledgers",
    "stream_info",
    "trim",
    "trim_stream",
]
