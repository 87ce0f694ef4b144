"""Operator actions on streams and groups: status, reset, drain, prune, trim, DLQ, audit.

Every function that changes state appends `{action, operator, args, at}` to the audit stream.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ResponseError

from streams._cluster import is_cluster
from streams._deadletter import DLQ_META
from streams._errors import AdminError
from streams._keys import Keys, dlq_key
from streams._lag import group_lags
from streams._metrics import instruments


def _s(value: object) -> str:
    # DLQ entries may hold raw binary (firehose frames): show them, never crash on them.
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _id_ms(entry_id: str | None) -> int | None:
    return int(entry_id.split("-")[0]) if entry_id else None


@dataclass(frozen=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True)
class GroupInfo:
    name: str
    lag: int | None
    pending: int
    last_delivered_id: str
    consumers: list[ConsumerInfo] = field(default_factory=list)
    # Age of the oldest entry the group has not acknowledged (streams/_lag.py); 0.0: none.
    lag_s: float | None = None


@dataclass(frozen=True)
class StreamInfo:
    stream: str
    length: int
    first_id: str | None
    last_id: str | None
    first_age_s: float | None
    last_age_s: float | None
    dlq_length: int
    groups: list[GroupInfo]

    def to_json(self) -> dict[str, object]:
        return asdict(self)


async def audit(redis: aioredis.Redis, keys: Keys, action: str, **args: object) -> None:
    """Append one audit entry; the operator is $STREAMFILL_OPERATOR or the login name."""
    await redis.xadd(
        keys.audit(),
        {
            "action": action,
            "operator": operator_name(),
            "args": json.dumps(args, default=str),
            "at": f"{time.time():.3f}",
        },
    )


def operator_name() -> str:
    """Who runs this command, for audit entries: $STREAMFILL_OPERATOR, else the login name."""
    return os.environ.get("STREAMFILL_OPERATOR") or _login()


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


async def list_streams(redis: aioredis.Redis, keys: Keys) -> list[str]:
    """Every stream key under the prefix, DLQs and the audit stream excluded."""
    found: list[str] = []
    async for key in redis.scan_iter(match=keys.all_streams_pattern(), _type="stream", count=500):
        name = _s(key)
        if not name.endswith(":dlq") and name != keys.audit() and not _is_ledger(name):
            found.append(name)
    return sorted(found)


def _is_ledger(name: str) -> bool:
    """A skip-ahead ledger (`Keys.ledger`) or an event-stream gaps ledger (`Keys.gaps`)."""
    return ":skipped:" in name or ":gaps:" in name


async def skip_ledgers(redis: aioredis.Redis, keys: Keys) -> dict[str, int]:
    """Every skip-ahead and gaps ledger under the prefix and how many ranges it still holds."""
    found: dict[str, int] = {}
    async for key in redis.scan_iter(match=keys.all_streams_pattern(), _type="stream", count=500):
        name = _s(key)
        if _is_ledger(name):
            found[name] = int(await redis.xlen(name))
    return dict(sorted(found.items()))


async def stream_info(redis: aioredis.Redis, stream: str) -> StreamInfo:
    if not await redis.exists(stream):
        raise AdminError(f"no such stream: {stream}")
    info = await redis.xinfo_stream(stream)
    lags = {lag.group: lag.seconds for lag in await group_lags(redis, stream)}
    groups = [await _group_info(redis, stream, g, lags) for g in await redis.xinfo_groups(stream)]
    now_ms = time.time() * 1000
    first = _s(info["first-entry"][0]) if info.get("first-entry") else None
    last = _s(info["last-entry"][0]) if info.get("last-entry") else None
    first_ms, last_ms = _id_ms(first), _id_ms(last)
    return StreamInfo(
        stream=stream,
        length=int(info["length"]),
        first_id=first,
        last_id=last,
        first_age_s=None if first_ms is None else round((now_ms - first_ms) / 1000, 3),
        last_age_s=None if last_ms is None else round((now_ms - last_ms) / 1000, 3),
        dlq_length=int(await redis.xlen(dlq_key(stream))),
        groups=groups,
    )


async def _group_info(
    redis: aioredis.Redis, stream: str, group: dict[str, object], lags: dict[str, float]
) -> GroupInfo:
    name = _s(group["name"])
    consumers = [
        ConsumerInfo(_s(c["name"]), int(c["pending"]), int(c["idle"]))
        for c in await redis.xinfo_consumers(stream, name)
    ]
    lag = group.get("lag")
    return GroupInfo(
        name=name,
        lag=None if lag is None else int(lag),  # type: ignore[call-overload]
        pending=int(group["pending"]),  # type: ignore[call-overload]
        last_delivered_id=_s(group["last-delivered-id"]),
        consumers=consumers,
        lag_s=lags.get(name),
    )


async def require_group(redis: aioredis.Redis, stream: str, group: str) -> GroupInfo:
    info = await stream_info(redis, stream)
    for g in info.groups:
        if g.name == group:
            return g
    known = ", ".join(g.name for g in info.groups) or "none"
    raise AdminError(f"stream {stream} has no group {group!r} (groups: {known})")


async def reset_group(redis: aioredis.Redis, keys: Keys, stream: str, group: str, to: str) -> None:
    """Re-point a group: `0` replays everything, `$` skips to the end, or an explicit id."""
    await require_group(redis, stream, group)
    try:
        await redis.xgroup_setid(stream, group, to)
    except ResponseError as exc:
        raise AdminError(f"cannot reset {stream}/{group} to {to}: {exc}") from exc
    await audit(redis, keys, "groups.reset", stream=stream, group=group, to=to)


async def drain(
    redis: aioredis.Redis,
    stream: str,
    group: str,
    *,
    timeout_s: float,
    progress: Callable[[GroupInfo], Awaitable[None]] | None = None,
    poll_s: float = 0.5,
) -> bool:
    """Wait until the group's lag and pending are both 0; False on timeout."""
    import anyio

    deadline = time.monotonic() + timeout_s
    while True:
        g = await require_group(redis, stream, group)
        if progress is not None:
            await progress(g)
        if g.pending == 0 and (
            g.lag == 0 or (g.lag is None and g.last_delivered_id == await _last_id(redis, stream))
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(poll_s)


async def _last_id(redis: aioredis.Redis, stream: str) -> str:
    rows = await redis.xrevrange(stream, count=1)
    return _s(rows[0][0]) if rows else "0-0"


# Deletes a consumer only if it owns no pending entry, atomically (XGROUP DELCONSUMER would
# otherwise drop its pending entries from the group without a trace).
_PRUNE_LUA = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


async def prune_consumers(
    redis: aioredis.Redis, keys: Keys, stream: str, group: str, *, idle_s: float
) -> list[str]:
    """Delete consumers idle longer than `idle_s` that have nothing pending; returns their names."""
    info = await require_group(redis, stream, group)
    removed: list[str] = []
    for c in info.consumers:
        if c.idle_ms >= idle_s * 1000 and c.pending == 0:
            if int(await redis.eval(_PRUNE_LUA, 1, stream, group, c.name)) >= 0:
                removed.append(c.name)
    if removed:
        await audit(redis, keys, "consumers.prune", stream=stream, group=group, removed=removed)
    return removed


# The trim rule, evaluated and applied in one atomic step (a group reset or created between
# reading the groups and trimming would otherwise lose entries). An entry may go only when every
# group has both read it (id <= last-delivered-id: `XREADGROUP >` never returns it again) and
# acknowledged it (not in the PEL). So the MINID is the minimum over the groups of
# min(oldest pending id, the id right after last-delivered-id). A group's `lag`/`entries-read`
# are counters Redis may not know (null after XGROUP SETID, or once entries were deleted); the
# last-delivered id is what decides what the group reads next, so the rule uses it.
# Ids are compared as (ms, seq) decimal strings: a seq may exceed Lua's exact integers.
# Returns {minid, removed, group, reason}; minid is '' when the stream has no group.
_TRIM_LUA = """
local function less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then
    if #am ~= #bm then return #am < #bm end
    return am < bm
  end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local function incr(d)
  local out, carry = '', 1
  for i = #d, 1, -1 do
    local c = string.byte(d, i) - 48 + carry
    if c == 10 then c, carry = 0, 1 else carry = 0 end
    out = string.char(48 + c) .. out
  end
  if carry == 1 then out = '1' .. out end
  return out
end
local function succ(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if seq == '18446744073709551615' then return incr(ms) .. '-0' end
  return ms .. '-' .. incr(seq)
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {'', 0, '', ''} end
local minid, holder, why = nil, '', ''
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local bound, reason = succ(f['last-delivered-id']), 'unread'
  if tonumber(f['pending']) > 0 then
    local oldest = redis.call('XPENDING', KEYS[1], f['name'])[2]
    if less(oldest, bound) then bound, reason = oldest, 'pending' end
  end
  if minid == nil or less(bound, minid) then minid, holder, why = bound, f['name'], reason end
end
local removed = 0
if ARGV[1] == '1' then removed = redis.call('XTRIM', KEYS[1], 'MINID', minid) end
return {minid, removed, holder, why}
"""


@dataclass(frozen=True)
class TrimPlan:
    """What `trim` may remove from a stream, and which group holds the rest back.

    `minid`: entries with a smaller id are read and acknowledged by every group (None: the
    stream has no group, so nothing says what was read and nothing may go). `held_by` is the
    group whose need sets `minid`, `reason` why: "pending" (its oldest unacknowledged entry) or
    "unread" (the entry after its last-delivered id). `removed`: entries trimmed (0 for a plan).
    """

    stream: str
    minid: str | None
    held_by: str | None
    reason: str | None
    removed: int = 0


async def _trim_script(redis: aioredis.Redis, stream: str, *, apply: bool) -> TrimPlan:
    if not await redis.exists(stream):
        raise AdminError(f"no such stream: {stream}")
    minid, removed, group, reason = await redis.eval(_TRIM_LUA, 1, stream, "1" if apply else "0")
    if not _s(minid):
        return TrimPlan(stream, None, None, None)
    return TrimPlan(stream, _s(minid), _s(group), _s(reason), int(removed))


async def safe_trim_id(redis: aioredis.Redis, stream: str) -> str | None:
    """The MINID `trim` would use: every entry below it is read and acked by every group.

    None when the stream has no group (nothing may go)."""
    return (await _trim_script(redis, stream, apply=False)).minid


async def trim_stream(redis: aioredis.Redis, keys: Keys, stream: str, *, audited: bool = True) -> TrimPlan:
    """Trim, in one atomic step, the entries every group has read and acknowledged."""
    plan = await _trim_script(redis, stream, apply=True)
    if audited:
        await audit(
            redis,
            keys,
            "trim",
            stream=stream,
            minid=plan.minid,
            removed=plan.removed,
            held_by=plan.held_by,
            reason=plan.reason,
        )
    return plan


async def trim(redis: aioredis.Redis, keys: Keys, stream: str, *, audited: bool = True) -> int:
    """Trim the entries every group has read and acknowledged; returns how many were removed."""
    return (await trim_stream(redis, keys, stream, audited=audited)).removed


async def dlq_list(
    redis: aioredis.Redis, stream: str, *, count: int = 100
) -> list[tuple[str, dict[str, str]]]:
    rows: Any = await redis.xrange(dlq_key(stream), count=count)
    return [(_s(i), {_s(k): _s(v) for k, v in f.items()}) for i, f in rows]


async def dlq_replay(
    redis: aioredis.Redis,
    keys: Keys,
    stream: str,
    *,
    count: int = 1000,
    gate: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Move dead-lettered entries back onto their stream (original fields only), atomically each.

    `gate` is awaited before each entry (a rate, the live-lag throttle). Counted in
    `streamfill_replay_events_total` / `streamfill_replay_bytes_total{stream}`.
    """
    rows: Any = await redis.xrange(dlq_key(stream), count=count)
    moved = 0
    for entry_id, fields in rows:
        original = {k: v for k, v in fields.items() if _s(k) not in DLQ_META}
        if gate is not None and original:
            await gate()
        await _move_back(redis, stream, entry_id, original)
        if original:
            moved += 1
            count_replayed(stream, original)
    await audit(redis, keys, "dlq.replay", stream=stream, moved=moved)
    return moved


async def _move_back(redis: aioredis.Redis, stream: str, entry_id: bytes, original: dict[Any, Any]) -> None:
    if is_cluster(redis) and key_slot(stream.encode()) != key_slot(dlq_key(stream).encode()):
        # No MULTI across slots (a stream without a hash tag): put back, then delete (a crash
        # in between leaves it in both: replayed twice, never lost).
        if original:
            await redis.xadd(stream, original)
        await redis.xdel(dlq_key(stream), entry_id)
        return
    async with redis.pipeline(transaction=True) as pipe:
        if original:
            pipe.xadd(stream, original)
        pipe.xdel(dlq_key(stream), entry_id)
        await pipe.execute()


def count_replayed(stream: str, fields: Mapping[Any, Any]) -> None:
    """Count one replayed entry and its size (field names and values) in the replay metrics."""
    size = sum(len(k) + len(v) for k, v in fields.items())
    attrs = {"stream": stream}
    instruments().replay_events.add(1, attrs)
    instruments().replay_bytes.add(size, attrs)


async def dlq_purge(redis: aioredis.Redis, keys: Keys, stream: str) -> int:
    removed = int(await redis.xlen(dlq_key(stream)))
    await redis.delete(dlq_key(stream))
    await audit(redis, keys, "dlq.purge", stream=stream, removed=removed)
    return removed
