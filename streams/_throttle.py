"""Lag feedback for bulk producers: slow down, then pause, while live consumers fall behind.

A `Throttle` watches the lag in seconds (`streams/_lag.py`) of some (stream, group) pairs, the
live ones, and is shared by every bulk producer of a process (backfill listing, backfill writes,
DLQ replays): each calls `await throttle.wait()` before a write. The lag is read at most once per
`poll_interval_s` whoever asks, so producers cost Redis one small script call per interval.

- lag below `resume_below_s`: writes go at once;
- between `resume_below_s` and `pause_above_s`: each write is delayed, longer as the lag nears
  the pause threshold (slowing down before pausing);
- above `pause_above_s`: writes wait until the lag is back below `resume_below_s` (hysteresis:
  a lag hovering at the threshold does not flap).

Time spent waiting is counted in `streamfill_throttled_seconds_total{worker,reason}`, and while
paused the state is published under `state_key` (a short TTL) for `streamfill status`.

`Pace` is a plain rate limit (N entries a second) for operator replays (`--rate`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace

import anyio
import redis.asyncio as aioredis

from streams._lag import lag_seconds
from streams._metrics import instruments, set_gauge

log = logging.getLogger("streamfill.throttle")

REASON_LIVE_LAG = "live_lag"
# The published state outlives a few polls, so a paused worker that dies disappears soon.
STATE_TTL_S = 10


@dataclass(frozen=True, slots=True)
class ThrottleConfig:
    """What to watch and when to pause. `watched`: (stream key, group) pairs; group "" = every group."""

    watched: tuple[tuple[str, str], ...]
    pause_above_s: float = 2.0
    resume_below_s: float = 1.0
    poll_interval_s: float = 0.5
    worker: str = ""  # the metric's `worker` label and the published state's name
    state_key: str | None = None  # where the paused state is published (None: nowhere)

    def __post_init__(self) -> None:
        if not 0 <= self.resume_below_s < self.pause_above_s:
            raise ValueError(
                f"resume_below_s ({self.resume_below_s}) must be below pause_above_s ({self.pause_above_s})"
            )


@dataclass(frozen=True, slots=True)
class ThrottleStats:
    """A snapshot: the last lag read, whether paused now, and the totals so far."""

    worker: str
    lag_s: float
    paused: bool
    pauses: int
    throttled_s: float


class Throttle:
    """Shared by a process's bulk producers; `wait()` before each write."""

    def __init__(self, redis: aioredis.Redis, config: ThrottleConfig) -> None:
        self.config = config
        self._redis = redis
        self._lag = 0.0
        self._read_at = -float("inf")
        self._paused = False
        self._pauses = 0
        self._throttled_s = 0.0
        self._lock = anyio.Lock()
        self._attrs = {"worker": config.worker, "reason": REASON_LIVE_LAG}

    @property
    def paused(self) -> bool:
        return self._paused

    async def wait(self) -> None:
        """Return at once while live lag is low; otherwise slow down or pause (see the module)."""
        await self._refresh()
        if self._paused:
            await self._wait_paused()
            return
        delay = self._slowdown()
        if delay > 0:
            await anyio.sleep(delay)
            self._count(delay)

    def retune(self, *, pause_above_s: float, resume_below_s: float) -> None:
        """New thresholds (a live override), from the next reading on."""
        self.config = replace(self.config, pause_above_s=pause_above_s, resume_below_s=resume_below_s)

    def statistics(self) -> ThrottleStats:
        return ThrottleStats(self.config.worker, self._lag, self._paused, self._pauses, self._throttled_s)

    def _slowdown(self) -> float:
        """Between the thresholds: up to one poll interval per write, growing with the lag."""
        c = self.config
        if self._lag <= c.resume_below_s:
            return 0.0
        share = (self._lag - c.resume_below_s) / (c.pause_above_s - c.resume_below_s)
        return c.poll_interval_s * min(1.0, share)

    async def _refresh(self) -> None:
        """Read the lag if the last reading is older than the poll interval (one reader at a time)."""
        async with self._lock:
            if time.monotonic() - self._read_at < self.config.poll_interval_s:
                return
            self._lag = await lag_seconds(self._redis, self.config.watched)
            self._read_at = time.monotonic()
            if not self._paused and self._lag > self.config.pause_above_s:
                await self._enter_pause()
            elif self._paused and self._lag < self.config.resume_below_s:
                await self._leave_pause()
            elif self._paused:
                await self._publish()

    async def _wait_paused(self) -> None:
        started = time.monotonic()
        try:
            while self._paused:
                await anyio.sleep(self.config.poll_interval_s)
                await self._refresh()
        finally:
            self._count(time.monotonic() - started)

    def _count(self, seconds: float) -> None:
        self._throttled_s += seconds
        instruments().throttled.add(seconds, self._attrs)

    async def _enter_pause(self) -> None:
        self._paused = True
        self._pauses += 1
        set_gauge("streamfill_throttle_active", 1, worker=self.config.worker)
        log.warning(
            "live lag above threshold: pausing bulk production",
            extra={"worker": self.config.worker, "lag_s": round(self._lag, 3)},
        )
        await self._publish()

    async def _leave_pause(self) -> None:
        self._paused = False
        set_gauge("streamfill_throttle_active", 0, worker=self.config.worker)
        log.info(
            "live lag back below threshold: resuming",
            extra={"worker": self.config.worker, "lag_s": round(self._lag, 3)},
        )
        if self.config.state_key is not None:
            await self._redis.delete(self.config.state_key)

    async def _publish(self) -> None:
        if self.config.state_key is None:
            return
        state = {
            "worker": self.config.worker,
            "reason": REASON_LIVE_LAG,
            "lag_s": round(self._lag, 3),
            "pause_above_s": self.config.pause_above_s,
            "resume_below_s": self.config.resume_below_s,
            "at": round(time.time(), 3),
        }
        await self._redis.set(self.config.state_key, json.dumps(state), ex=STATE_TTL_S)


class Pace:
    """At most `rate` takes a second, evenly spaced (no bursts); `rate` None: no limit."""

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._next = 0.0

    async def take(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        if self._next > now:
            await anyio.sleep(self._next - now)
        self._next = max(now, self._next) + self._interval


async def throttled_states(redis: aioredis.Redis, pattern: str) -> list[dict[str, object]]:
    """The states paused throttles published under keys matching `pattern`."""
    states: list[dict[str, object]] = []
    async for key in redis.scan_iter(match=pattern, _type="string", count=500):
        raw = await redis.get(key)
        try:
            state = json.loads(raw) if raw else None
        except ValueError:
            state = None
        if isinstance(state, dict):
            states.append(state)
    return sorted(states, key=lambda s: str(s.get("worker", "")))
