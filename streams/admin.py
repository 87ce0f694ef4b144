"""Operator actions on streams and consumer groups: what `streamfill status|groups|consumers|trim|
dlq`, the control commands and the readiness checks use (the runtime itself is `streams`).

Every action that changes state writes an audit entry (`audit`), with the operator's name.
"""

from streams._admin import (
    ConsumerInfo,
    GroupInfo,
    StreamInfo,
    TrimPlan,
    audit,
    count_replayed,
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
from streams._partition_admin import (
    LogicalStreamInfo,
    logical_stream,
    merge,
    partition_number,
    partitions_of,
)

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
