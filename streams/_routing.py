"""Routing of a partitioned logical stream (issue #16): how many partitions, and which one an
entry goes to.

`Partitioning` says how many partitions each logical stream has (1 = today's key) and routes an
entry to one by its DID (crc32 % N; `did_of`: a `did` field, or the message's top-level `"did"`),
so one repo's events stay ordered in one partition. Entries without a DID go round-robin.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from streams._keys import Keys
from streams._producer import (
    Fields,
)


def partition_index(did: bytes | str, count: int) -> int:
    """The partition of a DID among `count`: crc32, stable across processes and languages."""
    raw = did.encode() if isinstance(did, str) else did
    return zlib.crc32(raw) % count


_DID_KEY = b'"did":"'


def did_of(fields: Fields) -> bytes | str | None:
    """The entry's DID: its `did` field, or the top-level `"did":"..."` of its JSON message.

    streamfill's messages (schemas/_messages.py: repo jobs, record, account, identity and repo
    events) are encoded with `did` before any nested user content (the record comes last), so
    the first `"did":"` of the value is the message's own: found without decoding the JSON.
    """
    value = fields.get(b"did")  # type: ignore[call-overload]
    if value is None:
        value = fields.get("did")  # type: ignore[call-overload]
    if value is not None:
        return value
    for raw in fields.values():
        data = raw.encode() if isinstance(raw, str) else raw
        start = data.find(_DID_KEY)
        if start >= 0:
            start += len(_DID_KEY)
            end = data.find(b'"', start)
            if end > start:
                return data[start:end]
    return None


@dataclass
class Partitioning:
    """How many partitions each logical stream (by name, without prefix) has; others have one."""

    keys: Keys
    counts: Mapping[str, int] = field(default_factory=dict)
    _by_key: dict[str, str] = field(init=False, default_factory=dict)
    _robin: itertools.count[int] = field(init=False, default_factory=itertools.count)

    def __post_init__(self) -> None:
        for name, count in self.counts.items():
            if count < 1:
                raise ValueError(f"{name}: partitions must be at least 1, got {count}")
            self._by_key[self.keys.stream(name)] = name

    def count(self, name: str) -> int:
        return self.counts.get(name, 1)

    def partition_keys(self, name: str) -> list[str]:
        """The keys of every partition of `name` (one: `keys.stream(name)`)."""
        n = self.count(name)
        return [self.keys.partition(name, i, n) for i in range(n)]

    def partition_keys_of(self, stream_key: str) -> list[str]:
        """As `partition_keys`, from the logical stream's key (`keys.stream(name)`)."""
        name = self._by_key.get(stream_key)
        return [stream_key] if name is None else self.partition_keys(name)

    def route(self, stream_key: str, fields: Fields) -> str:
        """The partition key an entry for logical stream `stream_key` goes to."""
        name = self._by_key.get(stream_key)
        if name is None:
            return stream_key
        n = self.count(name)
        if n == 1:
            return self.keys.partition(name, 0, 1)
        did = did_of(fields)
        index = partition_index(did, n) if did is not None else next(self._robin) % n
        return self.keys.partition(name, index, n)
