"""Batched, pipelined XADD with high-water-mark backpressure and cursors that move with the data.

Each `send` is one round trip: one script call that writes the batch's XADDs, entries for other
streams and the source cursor(s) atomically (so the cursor never runs ahead of its data), then a
reading of the target's backlog taken after the batch, so backpressure costs no extra round trip.
While the last reading is at or above the high mark, `send` blocks (it never drops and never
buffers) until the backlog falls below the low mark. One producer therefore overshoots the mark
by at most one batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import anyio
import redis.asyncio as aioredis

from streams._cluster import is_cluster
from streams._metrics import instruments, set_gauge
from streams._scripts import Script, ScriptCall, run_scripts
from streams._throttle import Throttle

log = logging.getLogger("streamfill.producer")

Fields = Mapping[bytes, bytes] | Mapping[str, str] | Mapping[bytes | str, bytes | str]


@dataclass(frozen=True, slots=True)
class Mark:
    """A versioned register slot guarding one entry: `HSET key field value` unless it holds news.

    `value` is 8 bytes, big-endian: a version (all bits but the lowest) and a flag (the lowest
    bit), optionally followed by a tag that names the value's source (any bytes; none = untagged).
    Versions whose top bit is clear are ordered; a version with its top bit set is opaque (only
    equal or not). With no stored value the entry is written (and the value stored); so it is
    when the version is newer (opaque: different), or the same with the other flag, with one
    exception: the same version with the flag cleared by a source other than the one that set it
    (both tagged, tags differ) is stale, and skipped. An older version, or the same with the same
    flag, skips the entry; but a tagged value with the flag set, whose tag differs from the
    stored one, replaces it (the slot changes hands; the entry is not written).
    """

    key: str
    field: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """Where to write and when to block. `high_water = None` disables backpressure."""

    stream: str
    high_water: int | None = 100_000
    low_water: int | None = None  # default: 90% of the high mark
    poll_interval_s: float = 0.05
    max_poll_interval_s: float = 1.0

    @property
    def low(self) -> int:
        """Blocked writers resume below this backlog; at least 1, or they would never resume."""
        if self.high_water is None:
            return 0
        return self.low_water if self.low_water is not None else max(1, int(self.high_water * 0.9))


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """A snapshot of one producer."""

    stream: str
    produced: int
    backlog: int
    blocked: bool
    blocked_seconds: float
    waits: int


class Producer:
    """Writes batches to one stream; with a `throttle` (bulk producers), each write waits on it first."""

    def __init__(
        self, redis: aioredis.Redis, config: ProducerConfig, *, throttle: Throttle | None = None
    ) -> None:
        self.config = config
        self._redis = redis
        self.throttle = throttle
        self._backlog = 0
        self._produced = 0
        self._blocked = False
        self._blocked_s = 0.0
        self._waits = 0
        self._attrs = {"stream": config.stream}
        self._cluster = is_cluster(redis)

    def retune(self, *, high_water: int | None, low_water: int | None) -> None:
        """New marks (a live override); a writer blocked now resumes by the new low mark."""
        self.config = replace(self.config, high_water=high_water, low_water=low_water)

    async def send(
        self,
        batch: Sequence[Fields],
        *,
        cursor: tuple[str, str] | None = None,
        cursors: Sequence[tuple[str, str]] = (),
        extra: Sequence[tuple[str, Fields]] = (),
    ) -> list[str]:
        """XADD `batch` (and `extra` (stream, fields) pairs), SET `cursor`/`cursors`, atomically.

        Returns the new entry ids of `batch`.

        Blocks first while the target's backlog is at or above the high mark.
        """
        sets = ((cursor,) if cursor is not None else ()) + tuple(cursors)
        ids = await self._write(batch, sets, extra, None)
        return [i or "" for i in ids]

    async def send_marked(
        self,
        batch: Sequence[Fields],
        marks: Sequence[Mark | None],
        *,
        cursors: Sequence[tuple[str, str]] = (),
        extra: Sequence[tuple[str, Fields]] = (),
    ) -> list[str | None]:
        """Like `send`, with one `Mark` (or None) per entry of `batch`, checked in the same step.

        An entry whose mark the register already holds (see `Mark`) is not written: its id is None.
        """
        if len(marks) != len(batch):
            raise ValueError(f"{len(marks)} marks for {len(batch)} entries")
        return await self._write(batch, tuple(cursors), extra, marks)

    async def _write(
        self,
        batch: Sequence[Fields],
        sets: Sequence[tuple[str, str]],
        extra: Sequence[tuple[str, Fields]],
        marks: Sequence[Mark | None] | None,
    ) -> list[str | None]:
        await self.wait_throttle()
        await self.wait_below_mark()
        keys, args = _script_args(self.config.stream, batch, extra, sets, marks)
        call = ScriptCall(WRITE if marks is None else WRITE_MARKED, keys, args)
        readings: list[Any] = []

        def read_backlog_after(pipe: Any, _sent: Sequence[int]) -> Callable[[list[Any]], None]:
            if self.config.high_water is not None:
                queue_backlog_reading(pipe, self.config.stream)
            return readings.append

        # On a cluster, the EVALSHA is routed by its keys (which must share a slot:
        # streams/_partitioned.py splits by slot).
        (reply,) = await run_scripts(self._redis, [call], read_backlog_after)
        if self.config.high_water is not None:
            # An empty batch to a stream that does not exist yet: no backlog to read.
            backlog = readings[-1]
            ok = not any(isinstance(r, Exception) for r in backlog)
            self._backlog = backlog_from_replies(backlog[0], backlog[1]) if ok else 0
        ids: list[str | None] = [
            None if r is None else r.decode() if isinstance(r, bytes) else str(r) for r in reply
        ]
        ids = (ids + [None] * len(batch))[: len(batch)]
        written = sum(1 for i in ids if i is not None)
        self._produced += written
        instruments().produced.add(written, self._attrs)
        return ids

    async def wait_throttle(self) -> None:
        """Slow down or pause while the throttle (live lag) says so; nothing without one."""
        if self.throttle is not None:
            await self.throttle.wait()

    async def wait_below_mark(self) -> None:
        """Block while the backlog is at or above the high mark, until it is below the low mark."""
        high = self.config.high_water
        if high is None or self._backlog < high:
            return
        self._enter_blocked()
        started, delay = time.monotonic(), self.config.poll_interval_s
        try:
            while True:
                self._backlog = await read_backlog(self._redis, self.config.stream)
                if self._backlog < self.config.low:
                    return
                await anyio.sleep(delay)
                delay = min(delay * 1.5, self.config.max_poll_interval_s)
        finally:
            self._blocked_s += time.monotonic() - started
            self._blocked = False
            set_gauge("streamfill_backpressure_active", 0, **self._attrs)

    def _enter_blocked(self) -> None:
        self._blocked = True
        self._waits += 1
        instruments().backpressure_waits.add(1, self._attrs)
        set_gauge("streamfill_backpressure_active", 1, **self._attrs)
        log.info("backpressure: blocking", extra={"stream": self.config.stream, "backlog": self._backlog})

    def statistics(self) -> ProducerStats:
        return ProducerStats(
            self.config.stream, self._produced, self._backlog, self._blocked, self._blocked_s, self._waits
        )


# One script call writes a whole batch: the XADDs, entries for other streams and the cursor(s),
# atomically (a script runs in isolation, like MULTI/EXEC). It also costs one command and one
# reply per batch instead of one per entry, which is most of a Python producer's time.
# ARGV: n, then per entry (key index, pair count, field, value, ...); then m, then per SET
# (key index, value). Returns the new entry ids in order.
_WRITE_LUA = """
local i = 1
local n = tonumber(ARGV[i]); i = i + 1
local ids = {}
for e = 1, n do
  local key = KEYS[tonumber(ARGV[i])]
  local count = tonumber(ARGV[i + 1]) * 2
  i = i + 2
  ids[e] = redis.call('XADD', key, '*', unpack(ARGV, i, i + count - 1))
  i = i + count
end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  redis.call('SET', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
  i = i + 2
end
return ids
"""

# The same with a `Mark` slot per entry (its own script, so that unmarked batches pay nothing):
# ARGV: n, then per entry (key index, pair count, mark key index or 0, [mark field, mark value,]
# field, value, ...); then m, then the SETs. An entry its mark skips gets false (nil) for an id.
# `news` says what a mark does (see `Mark`): 2 = write the entry and store the value, 1 = store
# the value only (a tagged source takes the slot over), 0 = nothing.
_WRITE_MARKED_LUA = """
local function news(old, new)
  if not old then return 2 end
  local oh, ol = struct.unpack('>I4I4', old)
  local nh, nl = struct.unpack('>I4I4', new)
  local ov, nv = math.floor(ol / 2), math.floor(nl / 2)
  if oh ~= nh or ov ~= nv then
    if oh >= 2147483648 or nh >= 2147483648 then return 2 end
    if nh > oh or (nh == oh and nv > ov) then return 2 end
    return 0
  end
  local of, nf = ol % 2, nl % 2
  local ot, nt = string.sub(old, 9), string.sub(new, 9)
  if nf ~= of then
    if nf == 1 or ot == '' or nt == '' or ot == nt then return 2 end
    return 0
  end
  if nf == 1 and nt ~= '' and nt ~= ot then return 1 end
  return 0
end
local i = 1
local n = tonumber(ARGV[i]); i = i + 1
local ids = {}
for e = 1, n do
  local key = KEYS[tonumber(ARGV[i])]
  local count = tonumber(ARGV[i + 1]) * 2
  local mark = tonumber(ARGV[i + 2])
  i = i + 3
  local write = true
  if mark > 0 then
    local hash, field, value = KEYS[mark], ARGV[i], ARGV[i + 1]
    i = i + 2
    local what = news(redis.call('HGET', hash, field), value)
    if what > 0 then redis.call('HSET', hash, field, value) end
    write = what == 2
  end
  if write then
    ids[e] = redis.call('XADD', key, '*', unpack(ARGV, i, i + count - 1))
  else
    ids[e] = false
  end
  i = i + count
end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  redis.call('SET', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
  i = i + 2
end
return ids
"""


WRITE = Script(_WRITE_LUA)
WRITE_MARKED = Script(_WRITE_MARKED_LUA)


def _script_args(
    stream: str,
    batch: Sequence[Fields],
    extra: Sequence[tuple[str, Fields]],
    sets: Sequence[tuple[str, str]],
    marks: Sequence[Mark | None] | None = None,
) -> tuple[list[str], list[bytes | str | int]]:
    """Keys and arguments of `_WRITE_LUA`, or of `_WRITE_MARKED_LUA` when `marks` is given."""
    keys = [stream]
    index = {stream: 1}

    def key_index(key: str) -> int:
        if key not in index:
            keys.append(key)
            index[key] = len(keys)
        return index[key]

    args: list[bytes | str | int] = [len(batch) + len(extra)]
    no_mark = () if marks is None else (0,)
    for n, fields in enumerate(batch):
        mark = None if marks is None else marks[n]
        if mark is None:
            args += (1, len(fields), *no_mark)
        else:
            args += (1, len(fields), key_index(mark.key), mark.field, mark.value)
        for name, value in fields.items():
            args += (name, value)
    for other, fields in extra:
        args += (key_index(other), len(fields), *no_mark)
        for name, value in fields.items():
            args += (name, value)
    args.append(len(sets))
    for key, value in sets:
        args += (key_index(key), value)
    return keys, args


def queue_backlog_reading(pipe: aioredis.client.Pipeline, stream: str) -> None:
    pipe.xlen(stream)
    pipe.xinfo_groups(stream)


def backlog_from_replies(length: int, groups: list[dict[str, object]]) -> int:
    """The slowest group's backlog (lag + pending) where the server reports lag, else XLEN.

    Pending entries count too: they are delivered but not done, and a consumer that dies holds them.
    """
    if not groups:
        return int(length)
    worst = 0
    for group in groups:
        lag = group.get("lag")
        lag_value = int(length) if lag is None else int(lag)  # type: ignore[call-overload]
        worst = max(worst, lag_value + int(group.get("pending", 0)))  # type: ignore[call-overload]
    return worst


async def read_backlog(redis: aioredis.Redis, stream: str) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        queue_backlog_reading(pipe, stream)
        length, groups = await pipe.execute()
    return backlog_from_replies(length, groups)
