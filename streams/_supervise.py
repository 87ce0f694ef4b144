"""Riding out a Redis restart or failover: a component that lost Redis is restarted once it is back.

A component's `run` that fails only because Redis went away (connection refused or reset, a
timeout, `LOADING` while a restarted server reads its AOF, `READONLY` from a demoted master, a
cluster that is down for a moment) is not a crash: `supervise` waits for Redis with backoff (PING)
and runs the component again, which resumes from what Redis holds (a consumer re-reads its own
pending entries first, a source re-reads its cursor). Nothing acknowledged is lost: an entry is
acked, and a cursor moved, only in the same step as the writes it covers. Redis gone for longer
than `window_s` raises `RedisUnavailable` (a `redis.exceptions.ConnectionError`: the edge turns it
into one line, exit 2). Any other failure propagates at once, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus
from redis import exceptions as rex

from streams._errors import RedisUnavailable
from streams._retry import Backoff

log = logging.getLogger("streamfill.worker")

__all__ = ["RedisUnavailable", "is_redis_blip", "supervise"]

# What a restart or failover of Redis raises; AuthenticationError (a ConnectionError) is not one:
# a password that no longer works is for the operator.
_BLIPS = (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, rex.ClusterDownError, rex.TryAgainError)
_BACKOFF = Backoff(base_s=0.1, cap_s=5.0)
# A PING that takes longer than this counts as no answer.
_PING_TIMEOUT_S = 2.0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def is_redis_blip(exc: BaseException) -> bool:
    """Whether `exc` (or every exception in the group) is Redis going away, and nothing else."""
    leaves = _leaves(exc)
    return all(isinstance(e, _BLIPS) and not isinstance(e, rex.AuthenticationError) for e in leaves)


async def supervise(
    component: object,
    redis: aioredis.Redis,
    window_s: float,
    stopping: Callable[[], bool],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run `component` (a `Component`), restarting it after a Redis blip of up to `window_s`."""
    started = False

    def running() -> None:  # once only, also when it ends before it ever ran (stopped meanwhile)
        nonlocal started
        if not started:
            started = True
            task_status.started()

    while True:
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(component.run)  # type: ignore[attr-defined]
                running()
            return
        except BaseException as exc:
            if not is_redis_blip(exc):
                raise
            name = type(component).__name__
            if stopping():  # its work in flight stays pending for the next start, as at any stop
                log.warning("lost Redis while stopping", extra={"component": name})
                running()
                return
            log.warning(
                "lost Redis: waiting for it, then restarting",
                extra={"component": name, "error": f"{type(exc).__name__}: {exc}"},
            )
            first = exc
        if not await wait_for_redis(redis, window_s, stopping, first):
            running()
            return
        log.warning("Redis is back: restarting", extra={"component": name})


async def wait_for_redis(
    redis: aioredis.Redis, window_s: float, stopping: Callable[[], bool], cause: BaseException
) -> bool:
    """PING with backoff until Redis answers (True), or the worker is stopping (False).

    Raises RedisUnavailable when `window_s` passes without an answer.
    """
    deadline = anyio.current_time() + window_s
    attempt, last = 0, cause
    while not stopping():
        left = deadline - anyio.current_time()
        try:
            with anyio.fail_after(max(0.01, min(_PING_TIMEOUT_S, left))):
                await redis.ping()
            return True
        except (*_BLIPS, TimeoutError) as exc:
            if isinstance(exc, rex.AuthenticationError):
                raise
            last = exc
        left = deadline - anyio.current_time()
        if left <= 0:
            raise RedisUnavailable(window_s, last) from last
        attempt += 1
        await anyio.sleep(min(_BACKOFF.delay(attempt), left))
    return False
