"""Operator actions on streams and groups: status, reset, drain, prune, trim, DLQ, audit.

Every function that changes state appends `{action, operator, args, at}` to the audit stream.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from streams._audit import audit
from streams._errors import AdminError
from streams._keys import Keys, dlq_key
from streams._lag import group_lags


def as_text(value: object) -> str:
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


async def list_streams(redis: aioredis.Redis, keys: Keys) -> list[str]:
    """Every stream key under the prefix, DLQs and the audit stream excluded."""
    found: list[str] = []
    async for key in redis.scan_iter(match=keys.all_streams_pattern(), _type="stream", count=500):
        name = as_text(key)
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
        name = as_text(key)
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
    first = as_text(info["first-entry"][0]) if info.get("first-entry") else None
    last = as_text(info["last-entry"][0]) if info.get("last-entry") else None
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
    name = as_text(group["name"])
    consumers = [
        ConsumerInfo(as_text(c["name"]), int(c["pending"]), int(c["idle"]))
        for c in await redis.xinfo_consumers(stream, name)
    ]
    lag = group.get("lag")
    return GroupInfo(
        name=name,
        lag=None if lag is None else int(lag),  # type: ignore[call-overload]
        pending=int(group["pending"]),  # type: ignore[call-overload]
        last_delivered_id=as_text(group["last-delivered-id"]),
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
    return as_text(rows[0][0]) if rows else "0-0"


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
