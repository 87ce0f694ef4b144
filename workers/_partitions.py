"""Which streams are partitioned, and into how many (STREAMFILL_PARTITIONS, docs/cluster.md).

The streams whose entries carry a `did` are partitioned by it: repo jobs (`repo_backfill`) and
record events (`firehose_live`, `firehose_backfill`, and the names a deployment gives them).
Labels and the replayer's streams stay one stream each. Every worker of a deployment must use
the same count: a producer and a consumer that disagree would write and read different keys.
"""

from __future__ import annotations

from collections.abc import Iterable

from streams import Keys, Partitioning, StreamNames

DID_STREAMS = (StreamNames.REPO_BACKFILL, StreamNames.FIREHOSE_LIVE, StreamNames.FIREHOSE_BACKFILL)


def partitioning(prefix: str, partitions: int, names: Iterable[str] = ()) -> Partitioning:
    """`partitions` for every DID stream, the default names and `names` (configured ones)."""
    return Partitioning(Keys(prefix), dict.fromkeys((*DID_STREAMS, *names), partitions))
