"""Operator views over partitioned streams: which keys are partitions of which logical stream, and
one logical stream's totals from its partitions' `StreamInfo`s.

Partitions are found by their key shape (`<prefix>:{<name>:<index>[:<n>]}`, `Keys.partition`), so
the operator commands need no partition count: they act on what exists.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from streams._admin import ConsumerInfo, GroupInfo, StreamInfo
from streams._keys import Keys

_PARTITION = re.compile(r"^\{(?P<name>[^{}:]+):(?P<index>\d+)(?::\d+)?\}$")


def logical_stream(keys: Keys, key: str) -> str:
    """The logical stream's key (`keys.stream(name)`) a partition key belongs to; `key` otherwise."""
    bare = key[len(keys.prefix) + 1 :] if keys.prefix and key.startswith(keys.prefix + ":") else key
    match = _PARTITION.match(bare)
    return keys.stream(match["name"]) if match else key


def partition_number(keys: Keys, key: str) -> int:
    bare = key[len(keys.prefix) + 1 :] if keys.prefix and key.startswith(keys.prefix + ":") else key
    match = _PARTITION.match(bare)
    return int(match["index"]) if match else 0


async def partitions_of(redis: aioredis.Redis, keys: Keys, name: str) -> list[str]:
    """The partition keys of logical stream `name` that exist, in partition order; `[keys.stream(name)]`
    when it has none (an unpartitioned stream, or nothing written yet)."""
    found: set[str] = set()
    pattern = keys.stream("{" + name + ":*")
    async for raw in redis.scan_iter(match=pattern, _type="stream", count=500):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if logical_stream(keys, key) == keys.stream(name):
            found.add(key)
    if not found:
        return [keys.stream(name)]
    return sorted(found, key=lambda k: partition_number(keys, k))


@dataclass(frozen=True)
class LogicalStreamInfo(StreamInfo):
    """A logical stream's totals over its partitions, with each partition's own info."""

    partitions: list[StreamInfo] = field(default_factory=list)


def _merge_groups(groups: Sequence[GroupInfo]) -> GroupInfo:
    lags = [g.lag for g in groups]
    consumers: dict[str, ConsumerInfo] = {}
    for g in groups:
        for c in g.consumers:
            seen = consumers.get(c.name)
            consumers[c.name] = (
                c
                if seen is None
                else ConsumerInfo(c.name, seen.pending + c.pending, min(seen.idle_ms, c.idle_ms))
            )
    return GroupInfo(
        name=groups[0].name,
        lag=None if any(lag is None for lag in lags) else sum(lag or 0 for lag in lags),
        pending=sum(g.pending for g in groups),
        last_delivered_id="-",  # one per partition: see --partitions
        consumers=sorted(consumers.values(), key=lambda c: c.name),
        # The logical stream is as far behind as its slowest partition.
        lag_s=max((g.lag_s for g in groups if g.lag_s is not None), default=None),
    )


def merge(stream: str, parts: Sequence[StreamInfo], own_dlq: int = 0) -> LogicalStreamInfo:
    """Totals: lengths, DLQs, lag and pending added up; the oldest first and newest last entry."""
    by_group: dict[str, list[GroupInfo]] = {}
    for part in parts:
        for g in part.groups:
            by_group.setdefault(g.name, []).append(g)
    firsts = [p for p in parts if p.first_id is not None]
    lasts = [p for p in parts if p.last_id is not None]
    first = max(firsts, key=lambda p: p.first_age_s or 0.0, default=None)
    last = min(lasts, key=lambda p: p.last_age_s or 0.0, default=None)
    return LogicalStreamInfo(
        stream=stream,
        length=sum(p.length for p in parts),
        first_id=first.first_id if first else None,
        last_id=last.last_id if last else None,
        first_age_s=first.first_age_s if first else None,
        last_age_s=last.last_age_s if last else None,
        dlq_length=sum(p.dlq_length for p in parts) + own_dlq,
        groups=[_merge_groups(gs) for _, gs in sorted(by_group.items())],
        partitions=list(parts),
    )
