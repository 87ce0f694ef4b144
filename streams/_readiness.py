"""Readiness that says why not: checks returning machine-readable reasons for `/readyz` and `status`.

A check is an async callable returning a list of reasons (empty: fine). Each reason is a JSON
object with a `reason` key:

- `startup`: the worker's components have not all started yet;
- `dependency`: a server does not answer (`dependency`: "redis" / "postgresql", `error`);
- `lag`: live consumers are behind (`lag_s`, `threshold_s`);
- `warmup`: a backfill is in progress (`progress_pct`, `remaining` entries).

`evaluate` runs the checks with a deadline each: a check that does not answer in time is itself
a `dependency` reason (a hung server must not hang the probe).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import redis.asyncio as aioredis

from streams._lag import lag_seconds

Reason = dict[str, Any]
Check = Callable[[], Awaitable[list[Reason]]]

CHECK_TIMEOUT_S = 2.0


async def evaluate(checks: Sequence[tuple[str, Check]], timeout_s: float = CHECK_TIMEOUT_S) -> list[Reason]:
    """Every reason of every check; `checks` are (dependency name, check) pairs."""
    reasons: list[Reason] = []
    for name, check in checks:
        found: list[Reason] | None = None
        try:
            with anyio.move_on_after(timeout_s):
                found = await check()
        except Exception as exc:
            found = [dependency(name, exc)]
        reasons += found if found is not None else [dependency(name, f"no answer within {timeout_s}s")]
    return reasons


def dependency(name: str, error: object) -> Reason:
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return {"reason": "dependency", "dependency": name, "error": text}


def redis_check(redis: aioredis.Redis) -> Check:
    """`dependency` when Redis does not answer PING."""

    async def check() -> list[Reason]:
        try:
            await redis.ping()
        except Exception as exc:
            return [dependency("redis", exc)]
        return []

    return check


def lag_check(redis: aioredis.Redis, watched: Sequence[tuple[str, str]], threshold_s: float) -> Check:
    """`lag` while the worst lag of `watched` (stream key, group or "" for all) is above the threshold."""

    async def check() -> list[Reason]:
        lag = await lag_seconds(redis, watched)
        if lag > threshold_s:
            return [{"reason": "lag", "lag_s": round(lag, 3), "threshold_s": threshold_s}]
        return []

    return check


async def backlog_progress(redis: aioredis.Redis, streams: Sequence[str]) -> tuple[int, int]:
    """(done, remaining) entries over every group of `streams`: done = read and acknowledged,
    remaining = unread + pending. A group whose lag Redis does not know counts XLEN as unread."""
    done = remaining = 0
    for stream in streams:
        if not await redis.exists(stream):
            continue
        length = int(await redis.xlen(stream))
        for g in await redis.xinfo_groups(stream):
            pending = int(g["pending"])
            lag = length if g.get("lag") is None else int(g["lag"])
            read = g.get("entries-read")
            done += max(0, (length - lag if read is None else int(read)) - pending)
            remaining += lag + pending
    return done, remaining


def warmup_check(redis: aioredis.Redis, jobs: Sequence[str], events: Sequence[str] = ()) -> Check:
    """`warmup` while the groups of `jobs` (repo_backfill's partitions) or of `events`
    (firehose_backfill's) have entries to read or acknowledge; the percentage is of `jobs`."""

    async def check() -> list[Reason]:
        done, remaining = await backlog_progress(redis, jobs)
        _, events_left = await backlog_progress(redis, events)
        if remaining == 0 and events_left == 0:
            return []
        pct = 100.0 if remaining == 0 else round(100.0 * done / (done + remaining), 1)
        return [
            {"reason": "warmup", "progress_pct": pct, "remaining": remaining, "remaining_events": events_left}
        ]

    return check
