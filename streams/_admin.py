"""Operator actions on streams and groups: status, reset, drain, prune, trim, DLQ, audit.

Every function that changes state appends `{action, operator, args, at}` to the audit stream.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ResponseError

from streams._cluster import is_cluster
from streams._keys import Keys
from streams._settle import DLQ_META
from streams._types import id_key


class AdminError(Exception):
    """An operator asked for something that does not exist or cannot be done."""


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
    operator = os.environ.get("STREAMFILL_OPERATOR") or _login()
    await redis.xadd(
        keys.audit(),
        {
            "action": action,
            "operator": operator,
            "args": json.dumps(args, default=str),
            "at": f"{time.time():.3f}",
        },
    )


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
        if not name.endswith(":dlq") and name != keys.audit() and ":skipped:" not in name:
            found.append(name)
    return sorted(found)


async def skip_ledgers(redis: aioredis.Redis, keys: Keys) -> dict[str, int]:
    """Every skip-ahead ledger under the prefix and how many skipped ranges it still holds."""
    found: dict[str, int] = {}
    async for key in redis.scan_iter(match=keys.all_streams_pattern(), _type="stream", count=500):
        name = _s(key)
        if ":skipped:" in name:
            found[name] = int(await redis.xlen(name))
    return dict(sorted(found.items()))


async def stream_info(redis: aioredis.Redis, stream: str) -> StreamInfo:
    if not await redis.exists(stream):
        raise AdminError(f"no such stream: {stream}")
    info = await redis.xinfo_stream(stream)
    groups = [await _group_info(redis, stream, g) for g in await redis.xinfo_groups(stream)]
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
        dlq_length=int(await redis.xlen(f"{stream}:dlq")),
        groups=groups,
    )


async def _group_info(redis: aioredis.Redis, stream: str, group: dict[str, object]) -> GroupInfo:
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


async def safe_trim_id(redis: aioredis.Redis, stream: str) -> str | None:
    """The smallest id some group still needs (pending or unread); None when nothing may go."""
    groups = await redis.xinfo_groups(stream)
    if not groups:
        return None  # nobody has acknowledged anything
    needed: list[tuple[int, int]] = []
    for g in groups:
        name = _s(g["name"])
        summary = await redis.xpending(stream, name)
        if int(summary["pending"]):
            needed.append(id_key(_s(summary["min"])))
        else:
            ms, seq = id_key(_s(g["last-delivered-id"]))
            needed.append((ms, seq + 1))
    ms, seq = min(needed)
    return f"{ms}-{seq}"



async def trim(redis: aioredis.Redis, keys: Keys, stream: str, *, audited: bool = True) -> int:
    """Trim entries every group has acknowledged (XTRIM MINID); returns how many were removed."""
    if not await redis.exists(stream):
        raise AdminError(f"no such stream: {stream}")
    min_id = await safe_trim_id(redis, stream)
    if min_id is None:
        return 0
    removed = int(await redis.xtrim(stream, minid=min_id, approximate=False))
    if audited:
        await audit(redis, keys, "trim", stream=stream, minid=min_id, removed=removed)
    return removed


async def dlq_list(
    redis: aioredis.Redis, stream: str, *, count: int = 100
) -> list[tuple[str, dict[str, str]]]:
    rows: Any = await redis.xrange(f"{stream}:dlq", count=count)
    return [(_s(i), {_s(k): _s(v) for k, v in f.items()}) for i, f in rows]


async def dlq_replay(redis: aioredis.Redis, keys: Keys, stream: str, *, count: int = 1000) -> int:
    """Move dead-lettered entries back onto their stream (original fields only), atomically each."""
    rows: Any = await redis.xrange(f"{stream}:dlq", count=count)
    moved = 0
    for entry_id, fields in rows:
        original = {k: v for k, v in fields.items() if _s(k) not in DLQ_META}
        if is_cluster(redis) and key_slot(stream.encode()) != key_slot(f"{stream}:dlq".encode()):
            # No MULTI across slots (a stream without a hash tag): put back, then delete (a crash
            # in between leaves it in both: replayed twice, never lost).
            if original:
                await redis.xadd(stream, original)
            await redis.xdel(f"{stream}:dlq", entry_id)
            moved += 1 if original else 0
            continue
        async with redis.pipeline(transaction=True) as pipe:
            if original:
                pipe.xadd(stream, original)
            pipe.xdel(f"{stream}:dlq", entry_id)
            await pipe.execute()
        moved += 1 if original else 0
    await audit(redis, keys, "dlq.replay", stream=stream, moved=moved)
    return moved


async def dlq_purge(redis: aioredis.Redis, keys: Keys, stream: str) -> int:
    removed = int(await redis.xlen(f"{stream}:dlq"))
    await redis.delete(f"{stream}:dlq")
    await audit(redis, keys, "dlq.purge", stream=stream, removed=removed)
    return removed
