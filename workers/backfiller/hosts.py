"""Per-PDS politeness: a request rate, a concurrency limit and 429 back-off, host by host.

One slow or throttling PDS must not stall the others: a job for a host that is backing off for
longer than `max_wait_s`, or that already has too many jobs waiting, is handed back to the
runtime as a Retry (freeing the worker slot) instead of waiting in place.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio

from streams import Slots


class HostBusy(Exception):
    """The host cannot take this job now; retry after `retry_after_s`."""

    permanent = False

    def __init__(self, host: str, retry_after_s: float, why: str) -> None:
        super().__init__(f"{host}: {why}, retry in {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


@dataclass
class _Host:
    semaphore: Slots
    next_slot: float = 0.0  # monotonic time the next request may start (rate limit)
    blocked_until: float = 0.0  # monotonic time a 429 told us to wait until
    waiting: int = 0
    throttled: int = 0
    requests: int = 0
    stats: dict[str, int] = field(default_factory=dict)


class HostLimiter:
    """Admission control for requests to many hosts."""

    def __init__(
        self, rps: float, concurrency: int, *, max_wait_s: float = 2.0, max_waiting: int = 8
    ) -> None:
        self._interval = 1.0 / rps if rps > 0 else 0.0
        self._concurrency = concurrency
        self._max_wait_s = max_wait_s
        self._max_waiting = max_waiting
        self._hosts: dict[str, _Host] = {}

    @property
    def limits(self) -> tuple[float, int]:
        """(requests per second, concurrent requests) per host, as configured now."""
        return (1.0 / self._interval if self._interval else 0.0), self._concurrency

    def retune(self, rps: float, concurrency: int) -> None:
        """A new rate and concurrency per host (a live override), for requests not yet admitted."""
        self._interval = 1.0 / rps if rps > 0 else 0.0
        self._concurrency = concurrency
        for state in self._hosts.values():
            state.semaphore.resize(concurrency)

    def _host(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host(Slots(self._concurrency))
        return state

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        """Hold one request slot for `host` (rate + concurrency + back-off), or raise HostBusy."""
        state = self._host(host)
        self._check_backoff(host, state)
        if state.waiting >= self._max_waiting:
            raise HostBusy(host, self._max_wait_s, f"{state.waiting} jobs already waiting")
        state.waiting += 1
        try:
            with anyio.fail_after(self._max_wait_s * 4):
                await state.semaphore.acquire()
        except TimeoutError:
            raise HostBusy(host, self._max_wait_s, "no free connection slot") from None
        finally:
            state.waiting -= 1
        try:
            await self._pace(state)
            state.requests += 1
            yield
        finally:
            state.semaphore.release()

    def _check_backoff(self, host: str, state: _Host) -> None:
        remaining = state.blocked_until - time.monotonic()
        if remaining > self._max_wait_s:
            raise HostBusy(host, remaining, "backing off after 429")

    async def _pace(self, state: _Host) -> None:
        now = time.monotonic()
        start = max(now, state.next_slot, state.blocked_until)
        state.next_slot = start + self._interval
        if start > now:
            await anyio.sleep(start - now)

    def throttled(self, host: str, retry_after_s: float) -> None:
        """Record a 429: no request to `host` starts before `retry_after_s` from now."""
        state = self._host(host)
        state.throttled += 1
        state.blocked_until = max(state.blocked_until, time.monotonic() + retry_after_s)

    def backing_off(self) -> dict[str, dict[str, float]]:
        """Hosts in a 429 back-off now: `{host: {"until": Unix seconds, "throttled": 429s seen}}`."""
        now, wall = time.monotonic(), time.time()
        return {
            h: {"until": round(wall + s.blocked_until - now, 3), "throttled": s.throttled}
            for h, s in self._hosts.items()
            if s.blocked_until > now
        }

    def statistics(self) -> dict[str, dict[str, float]]:
        now = time.monotonic()
        return {
            h: {
                "requests": s.requests,
                "throttled": s.throttled,
                "waiting": s.waiting,
                "backoff_s": max(0.0, s.blocked_until - now),
            }
            for h, s in self._hosts.items()
        }
