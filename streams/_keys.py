"""Every Redis key name the runtime and the workers use is built here, and nowhere else."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from streams._cluster_nodes import slot_ranges

# Cursor value a listing source writes when it has paged to the end (rsky convention).
CURSOR_DONE = "!ingester-done"


def host_key(url_or_host: str) -> str:
    """The `{host}` part of cursor, ledger and gap keys: a URL's host[:port], without scheme or
    path (`https://bsky.network/` and `bsky.network` are the same host)."""
    rest = url_or_host.split("://", 1)[-1]
    return rest.split("/", 1)[0] or rest


def dlq_key(stream_key: str) -> str:
    """The dead-letter stream of a stream key (prefixed or not: it follows the key it is given,
    hash tag included, so a partition and its DLQ share a slot)."""
    return f"{stream_key}:dlq"


class StreamNames:
    """The pipeline's logical streams (../ARCHITECTURE.md's table), named here and nowhere else.

    A name is not a key: a stream's key is `Keys(prefix).stream(name)`, a partition's
    `Keys.partition(name, ...)`, its dead letters `Keys.dlq(key)`. `schemas.REGISTRY` maps the
    same names to their contracts (schemas imports nothing of ours; a test checks they agree).
    """

    REPO_BACKFILL: Final = "repo_backfill"
    FIREHOSE_LIVE: Final = "firehose_live"
    FIREHOSE_BACKFILL: Final = "firehose_backfill"
    LABEL_LIVE: Final = "label_live"
    CAPTAINS_LOG: Final = "captains_log"
    CAPTAINS_LOG_RESULTS: Final = "captains_log_results"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under an optional prefix (tests and multi-tenant deployments use one)."""

    prefix: str = ""

    def _k(self, name: str) -> str:
        return f"{self.prefix}:{name}" if self.prefix else name

    def stream(self, name: str) -> str:
        return self._k(name)

    def partition(self, stream: str, index: int, count: int) -> str:
        """Partition `index` of `count` of a logical stream: `<prefix>:{<tag>}`; count 1 is `stream()`.

        The hash tag puts every key built from the partition key (its DLQ) in one Redis Cluster
        slot, and `spread_tag` picks tags whose slots fall in `count` equal slot ranges, so that
        partitions spread evenly over masters that split the slots evenly.
        """
        if count == 1:
            return self.stream(stream)
        return self._k("{" + spread_tag(stream, index, count) + "}")

    def dlq(self, stream_key: str) -> str:
        return dlq_key(stream_key)

    def cursor(self, stream: str, host: str) -> str:
        return self._k(f"{stream}:cursor:{host}")

    def ledger(self, stream: str, host: str) -> str:
        """Skipped source ranges (skip-ahead), one stream entry per range."""
        return self._k(f"{stream}:skipped:{host}")

    def gaps(self, stream: str, host: str) -> str:
        """Event-stream gaps: ranges a follower never read (its source lost or reset our cursor)."""
        return self._k(f"{stream}:gaps:{host}")

    def listed(self, stream: str, bucket: int) -> str:
        """One bucket of the listed register: what a listing already enqueued (hash field -> mark)."""
        return self._k(f"{stream}:listed:{bucket:05x}")

    def listed_in(self, partition_key: str, bucket: int) -> str:
        """A register bucket of a partitioned stream: in the partition's slot (its hash tag), so
        that the script writing a job to the partition checks and marks it in one call."""
        return f"{partition_key}:listed:{bucket:05x}"

    def listed_pattern(self, stream: str) -> str:
        return self._k(f"{stream}:listed:*")

    def listed_partitions_pattern(self) -> str:
        """Every register bucket of a partitioned stream (`listed_in`)."""
        return self._k("{*}:listed:*")

    def hosts(self, stream: str, relay: str) -> str:
        """Hosts discovered through a relay's listHosts: hostname -> JSON of the last sighting."""
        return self._k(f"{stream}:hosts:{relay}")

    def outcomes(self, stream: str) -> str:
        """Permanent, expected outcomes (e.g. repo taken down) an operator can list."""
        return self._k(f"{stream}:outcomes")

    def backoff(self, stream_key: str, consumer: str) -> str:
        """Hosts a consumer of `stream_key` is backing off from: a JSON string with a TTL."""
        return f"{stream_key}:backoff:{consumer}"

    def backoff_pattern(self, stream_key: str) -> str:
        return f"{stream_key}:backoff:*"

    def throttle(self, worker: str) -> str:
        """A worker's paused throttle state (a JSON string with a TTL), for `status`."""
        return self._k(f"throttle:{worker}")

    def throttle_pattern(self) -> str:
        return self._k("throttle:*")

    def audit(self) -> str:
        return self._k("audit")

    def overrides(self) -> str:
        """Live overrides of settings: setting name -> JSON of the value and its window (a hash)."""
        return self._k("config:overrides")

    def heartbeat(self, kind: str, name: str) -> str:
        """A running worker's heartbeat (a JSON string with a TTL)."""
        return self._k(f"workers:{kind}:{name}")

    def heartbeats_pattern(self) -> str:
        return self._k("workers:*")

    def campaigns(self) -> str:
        """The names of every backfill campaign (a set)."""
        return self._k("campaigns")

    def campaign(self, name: str) -> str:
        """A campaign's state (a hash)."""
        return self._k(f"campaign:{name}")

    def campaign_repos(self, name: str) -> str:
        """A campaign's planned repos in enqueue order (a list of JSON objects)."""
        return self._k(f"campaign:{name}:repos")

    def campaign_enqueued(self, name: str) -> str:
        """DID -> entry id of the job a campaign enqueued for it (a hash)."""
        return self._k(f"campaign:{name}:enqueued")

    def campaign_lock(self, name: str) -> str:
        """Held by the one `apply` of a campaign that runs (a string with a TTL)."""
        return self._k(f"campaign:{name}:lock")

    def cache(self, kind: str, item: str) -> str:
        return self._k(f"cache:{kind}:{item}")

    def all_streams_pattern(self) -> str:
        return self._k("*")


def default_consumer_name(worker: str) -> str:
    """`<worker>-<hostname>`: stable across restarts, so a replica finds its own pending entries."""
    return f"{worker}-{socket.gethostname()}"


@lru_cache(maxsize=4096)
def spread_tag(name: str, index: int, count: int) -> str:
    """The first of `<name>:<index>`, `<name>:<index>:1`, ... whose hash slot lies in range `index`.

    Range `index` of `count` equal ranges of the 16384 slots; a tag is found in about `count`
    tries, and every process derives the same one.
    """
    if not 0 <= index < count:
        raise ValueError(f"partition {index} out of range for {count} partitions")
    first, last = slot_ranges(REDIS_CLUSTER_HASH_SLOTS, count)[index]
    n = 0
    while True:
        tag = f"{name}:{index}" if n == 0 else f"{name}:{index}:{n}"
        if first <= key_slot(tag.encode()) <= last:
            return tag
        n += 1
