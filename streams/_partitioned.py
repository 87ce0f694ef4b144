"""Partitioned logical streams (issue #16): a stream of N partitions, each a normal stream.

Built by composition on `Producer`'s script and `Consumer`, so that every per-stream guarantee
(atomic batch + cursor, dead-letter + ack in one MULTI, reclaim, own-pending-first, lease renewal)
holds per partition:

- `Partitioning` (streams/_routing.py) says how many partitions each logical stream has (1 =
  today's key) and routes an entry to one by its DID (crc32 % N), so one repo's events stay
  ordered in one partition. Entries without a DID go round-robin.
- `PartitionedProducer` writes a batch (and its `extra` entries and cursors) with one script
  call per Redis Cluster slot. When everything is in one slot (always on a single server) that
  is one atomic call, as before. When the batch spans slots, the data goes first and the cursors
  after, in a second round trip, only once every data call succeeded (and, with
  `wait_replicas`, once each master's `WAIT` says the data is on a replica): a cursor is never
  ahead of its data, also across a failover (docs/cluster.md).
- `PartitionedConsumer` (streams/_partitioned_consumer.py) runs one `Consumer` per partition
  (each its own group state, pending, reclaim, DLQ `<partition>:dlq` in the partition's slot),
  sharing the handler, and bounds the handler calls of all partitions together by the
  configured concurrency.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ClusterDownError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams._cluster import DEFAULT_FAILOVER_TIMEOUT_S, is_cluster
from streams._errors import ReplicationLagError
from streams._metrics import instruments, set_gauge
from streams._producer import (
    WRITE,
    WRITE_MARKED,
    Fields,
    Mark,
    Producer,
    ProducerConfig,
    ProducerStats,
    _script_args,
    backlog_from_replies,
    queue_backlog_reading,
    read_backlog,
)
from streams._routing import Partitioning
from streams._scripts import ScriptCall, run_scripts
from streams._throttle import Throttle

log = logging.getLogger("streamfill.producer")

# Between writes of a batch no replica confirmed (a promoted master has none until one attaches).
WAIT_RETRY_PAUSE_S = 0.5


@dataclass(slots=True)
class _Call:
    """One script call: the keys and arguments of the writes in one slot."""

    keys: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    entries: list[bytes | str | int] = field(default_factory=list)
    sets: list[bytes | str | int] = field(default_factory=list)
    count: int = 0
    n_sets: int = 0
    positions: list[int | None] = field(default_factory=list)  # batch index of each entry, or None

    def key_index(self, key: str) -> int:
        if key not in self.index:
            self.keys.append(key)
            self.index[key] = len(self.keys)
        return self.index[key]

    def add_entry(self, key: str, fields: Fields, position: int | None) -> None:
        self.entries += (self.key_index(key), len(fields))
        for name, value in fields.items():
            self.entries += (name, value)
        self.count += 1
        self.positions.append(position)

    def add_set(self, key: str, value: str) -> None:
        self.sets += (self.key_index(key), value)
        self.n_sets += 1

    def args(self) -> list[bytes | str | int]:
        return [self.count, *self.entries, self.n_sets, *self.sets]


class PartitionedProducer(Producer):
    """Writes batches to a logical stream of one or more partitions (same `send` as `Producer`).

    Backpressure: the high mark applies to each partition, as `ceil(high_water / N)`, so the
    logical stream's backlog stays bounded by the configured mark (the figure operators sized
    Redis memory with) and a writer blocks only on the partition it writes to, the one whose
    consumers are behind (DIDs hash evenly; a hot partition slows only its own writers).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        config: ProducerConfig,
        partitioning: Partitioning,
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        wait_retry_s: float = DEFAULT_FAILOVER_TIMEOUT_S,
        throttle: Throttle | None = None,
    ) -> None:
        super().__init__(redis, config, throttle=throttle)
        self._partitioning = partitioning
        self._cluster = is_cluster(redis)
        self._wait = (wait_replicas, wait_timeout_ms) if wait_replicas > 0 and self._cluster else None
        self._wait_retry_s = wait_retry_s
        self._backlogs = dict.fromkeys(partitioning.partition_keys_of(config.stream), 0)
        self._part_config = self._per_partition(config)

    def _per_partition(self, config: ProducerConfig) -> ProducerConfig:
        n = len(self._backlogs)
        high = None if config.high_water is None else max(1, math.ceil(config.high_water / n))
        low = None if config.low_water is None else max(1, math.ceil(config.low_water / n))
        return replace(config, high_water=high, low_water=low)

    def retune(self, *, high_water: int | None, low_water: int | None) -> None:
        super().retune(high_water=high_water, low_water=low_water)
        self._part_config = self._per_partition(self.config)

    @property
    def partitions(self) -> list[str]:
        return list(self._backlogs)

    async def send(
        self,
        batch: Sequence[Fields],
        *,
        cursor: tuple[str, str] | None = None,
        cursors: Sequence[tuple[str, str]] = (),
        extra: Sequence[tuple[str, Fields]] = (),
    ) -> list[str]:
        """XADD `batch` and `extra`, routed to partitions, then SET the cursors; ids of `batch`."""
        await self.wait_throttle()
        return await self._send(batch, cursor=cursor, cursors=cursors, extra=extra)

    async def _send(
        self,
        batch: Sequence[Fields],
        *,
        cursor: tuple[str, str] | None = None,
        cursors: Sequence[tuple[str, str]] = (),
        extra: Sequence[tuple[str, Fields]] = (),
    ) -> list[str]:
        targets = [self._partitioning.route(self.config.stream, fields) for fields in batch]
        await self.wait_below_mark(set(targets))
        sets = ((cursor,) if cursor is not None else ()) + tuple(cursors)
        data_calls, cursor_calls = self._plan(targets, batch, extra, sets)
        replies = await self._run_replicated(data_calls, sorted(set(targets)))
        ids: list[str] = [""] * len(batch)
        for call, reply in zip(data_calls, replies, strict=True):
            for position, entry_id in zip(call.positions, reply, strict=False):
                if position is not None:
                    ids[position] = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        if cursor_calls:  # the data is written (and on a replica, if asked): now the cursors
            await self._retrying(lambda: self._run(cursor_calls, [], wait=False), always=True)
        self._produced += len(batch)
        instruments().produced.add(len(batch), self._attrs)
        return ids

    async def send_marked(
        self,
        batch: Sequence[Fields],
        marks: Sequence[Mark | None],
        *,
        cursors: Sequence[tuple[str, str]] = (),
        extra: Sequence[tuple[str, Fields]] = (),
    ) -> list[str | None]:
        """`Producer.send_marked`, one marked script call per partition: each mark's key must be
        in its entry's partition slot (see `Keys.listed_in`); then `extra` and the cursors, after
        the data, as `send` writes them when they span slots."""
        if len(marks) != len(batch):
            raise ValueError(f"{len(marks)} marks for {len(batch)} entries")
        await self.wait_throttle()
        targets = [self._partitioning.route(self.config.stream, fields) for fields in batch]
        await self.wait_below_mark(set(targets))
        ids: list[str | None] = [None] * len(batch)
        for target in sorted(set(targets)):
            positions = [i for i, t in enumerate(targets) if t == target]
            part = [batch[i] for i in positions]
            part_marks = [marks[i] for i in positions]
            for mark in part_marks:
                if mark is not None and self._slot(mark.key) != self._slot(target):
                    raise ValueError(f"mark {mark.key} is not in the slot of partition {target}")
            keys, args = _script_args(target, part, (), (), part_marks)
            reply = await WRITE_MARKED(self._redis, keys, args)
            for position, entry_id in zip(positions, reply, strict=False):
                if entry_id is not None:
                    ids[position] = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        if extra or cursors:
            await self._send([], cursors=cursors, extra=extra)
        written = sum(1 for i in ids if i is not None)
        self._produced += written
        instruments().produced.add(written, self._attrs)
        return ids

    async def _run_replicated(self, calls: list[_Call], readings: list[str]) -> list[Any]:
        return await self._retrying(lambda: self._run(calls, readings), always=False)

    async def _retrying(self, run: Callable[[], Awaitable[list[Any]]], *, always: bool) -> list[Any]:
        """`run`, again while a master does not confirm a replica or a node is lost: the data is
        written again (a duplicate is harmless, a loss is not), until `wait_retry_s` is spent.

        A `WAIT` goes to a named node, which redis-py does not retry when that node is gone (a
        failover), and a pipeline's retries can end before the replica is promoted: both mean
        "not written", and the calls are sent again, routed anew. Connection errors are retried
        only with `wait_replicas` (or `always`, for cursors: a SET is idempotent).
        """
        deadline = anyio.current_time() + self._wait_retry_s
        lost = (RedisConnectionError, RedisTimeoutError, ClusterDownError)
        while True:
            try:
                return await run()
            except (ReplicationLagError, *lost) as exc:
                retry = self._wait is not None or (always and isinstance(exc, lost))
                if not retry or not self._cluster or anyio.current_time() >= deadline:
                    raise
                log.warning(
                    "a write was not confirmed: writing it again",
                    extra={**self._attrs, "error": f"{type(exc).__name__}: {exc}"},
                )
                await anyio.sleep(WAIT_RETRY_PAUSE_S)

    def _slot(self, key: str) -> int:
        return key_slot(key.encode()) if self._cluster else 0

    def _plan(
        self,
        targets: list[str],
        batch: Sequence[Fields],
        extra: Sequence[tuple[str, Fields]],
        sets: Sequence[tuple[str, str]],
    ) -> tuple[list[_Call], list[_Call]]:
        """Script calls for the data (one per slot) and for the cursors (none if in the data's)."""
        calls: dict[int, _Call] = {}
        for i, (key, fields) in enumerate(zip(targets, batch, strict=True)):
            calls.setdefault(self._slot(key), _Call()).add_entry(key, fields, i)
        for stream, fields in extra:
            key = self._partitioning.route(stream, fields)
            calls.setdefault(self._slot(key), _Call()).add_entry(key, fields, None)
        after: dict[int, _Call] = {}
        # One slot for everything (always so on one server): data and cursors in one atomic call.
        together = len(set(calls) | {self._slot(key) for key, _ in sets}) <= 1
        for key, value in sets:
            (calls if together else after).setdefault(self._slot(key), _Call()).add_set(key, value)
        return list(calls.values()), list(after.values())

    async def _run(self, calls: list[_Call], readings: list[str], *, wait: bool = True) -> list[Any]:
        """Run the script calls (streams/_scripts.py: EVALSHA, again after NOSCRIPT), WAIT, read
        the backlogs (after the writes: again when some were sent again)."""
        script_calls = [ScriptCall(WRITE, call.keys, call.args()) for call in calls]
        reading = readings if self._part_config.high_water is not None else []

        def wait_and_read(pipe: Any, sent: Sequence[int]) -> Callable[[list[Any]], None]:
            nodes = self._wait_nodes([calls[i] for i in sent]) if wait else []
            for node in nodes:
                # WAIT counts the writes of its own connection: one per master, routed there,
                # in the same pipeline as that master's writes (docs/cluster.md).
                pipe.execute_command("WAIT", *self._wait or (), target_nodes=node)
            for key in reading:
                queue_backlog_reading(pipe, key)

            def take(replies: list[Any]) -> None:
                self._check_waits(nodes, replies[: len(nodes)])
                self._read_backlogs(reading, replies[len(nodes) :])

            return take

        return await run_scripts(self._redis, script_calls, wait_and_read)

    def _wait_nodes(self, calls: list[_Call]) -> list[Any]:
        if self._wait is None:
            return []
        seen: dict[str, Any] = {}
        for call in calls:
            node = self._redis.get_node_from_key(call.keys[0])  # type: ignore[attr-defined]
            seen.setdefault(node.name, node)
        return list(seen.values())

    def _check_waits(self, nodes: list[Any], replies: list[Any]) -> None:
        wanted = self._wait[0] if self._wait else 0
        for node, reply in zip(nodes, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            if int(reply) < wanted:
                raise ReplicationLagError(
                    f"WAIT {wanted}: {node.name} confirmed {reply} replica(s); "
                    "the batch is not acknowledged (its cursor is not advanced)"
                )

    def _read_backlogs(self, keys: list[str], replies: list[Any]) -> None:
        for j, key in enumerate(keys):
            length, groups = replies[2 * j], replies[2 * j + 1]
            ok = not isinstance(length, Exception) and not isinstance(groups, Exception)
            self._backlogs[key] = backlog_from_replies(length, groups) if ok else 0

    async def wait_below_mark(self, partitions: set[str] | None = None) -> None:
        """Block while a partition about to be written is at or above its high mark."""
        high = self._part_config.high_water
        if high is None:
            return
        for key in sorted(partitions if partitions is not None else self._backlogs):
            if self._backlogs.get(key, 0) < high:
                continue
            self._backlog = self._backlogs[key]  # what the shared log line reports
            self._enter_blocked()  # the counters, the gauge and the log line of `Producer`
            started, delay = anyio.current_time(), self.config.poll_interval_s
            try:
                while True:
                    self._backlogs[key] = await read_backlog(self._redis, key)
                    if self._backlogs[key] < self._part_config.low:
                        break
                    await anyio.sleep(delay)
                    delay = min(delay * 1.5, self.config.max_poll_interval_s)
            finally:
                self._blocked_s += anyio.current_time() - started
                self._blocked = False
                set_gauge("streamfill_backpressure_active", 0, **self._attrs)

    def statistics(self) -> ProducerStats:
        return ProducerStats(
            self.config.stream,
            self._produced,
            sum(self._backlogs.values()),
            self._blocked,
            self._blocked_s,
            self._waits,
        )
