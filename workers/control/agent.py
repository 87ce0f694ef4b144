"""What every worker runs beside its components: the live-settings poll and its heartbeat.

The heartbeat is a JSON string under `Keys.heartbeat(kind, name)` with a TTL of three refresh
intervals: a worker that dies disappears from `streamfill workers` within HEARTBEAT_TTL_S.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
import redis.asyncio as aioredis

from streams import Keys
from workers.control.live import POLL_S, LiveSettings
from workers.control.overrides import OverrideStore

log = logging.getLogger("streamfill.control")

HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 3 * HEARTBEAT_S  # two missed refreshes are tolerated (a busy event loop)

Stats = Callable[[], object]


def _version() -> str:
    try:
        return version("streamfill")
    except PackageNotFoundError:
        return "unknown"


def plain(value: object) -> Any:
    """Statistics (dataclasses, tuples, mappings) as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _log_level(config: object) -> None:
    """STREAMFILL_LOG_LEVEL is live: the root logger follows it."""
    level = getattr(config, "log_level", None)
    if isinstance(level, str):
        logging.getLogger().setLevel(level.upper())


class Agent:
    """Polls the overrides into `live` and publishes this worker's heartbeat."""

    def __init__(self, redis: aioredis.Redis, live: LiveSettings[Any], *, kind: str, name: str) -> None:
        self._redis = redis
        self._keys = Keys(str(getattr(live.config, "prefix", "")))
        self._store = OverrideStore(redis, self._keys)
        self._live = live
        self.stats: Stats = dict  # set once the worker's components are built
        # Host and pid in the key: two processes given the same name both show (and the mistake with them).
        self._key = self._keys.heartbeat(kind, f"{name}@{socket.gethostname()}:{os.getpid()}")
        live.on_change(_log_level)
        self._static = {
            "kind": kind,
            "name": name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": _version(),
            "started": round(time.time(), 3),
        }

    async def start(self) -> None:
        """Apply the overrides active now (a worker started during a window runs with them)."""
        await self._live.refresh(self._store)

    async def run(self) -> None:
        """Until cancelled: poll every POLL_S, beat every HEARTBEAT_S; the heartbeat is removed at exit."""
        next_beat = 0.0
        try:
            while True:
                started = anyio.current_time()  # polls start POLL_S apart, whatever a poll took
                await self._guarded(self._live.refresh(self._store), "live settings poll")
                if started >= next_beat:
                    next_beat = started + HEARTBEAT_S
                    await self._guarded(self.beat(), "heartbeat")
                await anyio.sleep_until(started + POLL_S)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._guarded(self._redis.delete(self._key), "heartbeat removal")

    async def _guarded(self, step: Any, what: str) -> None:
        try:
            await step
        except Exception as exc:  # a Redis blip: the components report it; the next poll retries
            log.warning("control step failed", extra={"step": what, "error": str(exc)})

    def document(self) -> dict[str, Any]:
        live = self._live
        return {
            **self._static,
            "at": round(time.time(), 3),
            "settings": live.effective(),
            "overrides": live.applied,
            "refused": live.refused,
            "statistics": plain(self.stats()),
        }

    async def beat(self) -> None:
        doc = json.dumps(self.document(), default=str)
        await self._redis.set(self._key, doc, px=int(HEARTBEAT_TTL_S * 1000))


async def heartbeats(redis: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every live worker's heartbeat, by kind then name."""
    found = [k async for k in redis.scan_iter(match=keys.heartbeats_pattern(), _type="string", count=500)]
    if not found:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for key in found:
            pipe.get(key)
        docs = await pipe.execute()
    out = [json.loads(d) for d in docs if d]
    return sorted(out, key=lambda d: (d.get("kind", ""), d.get("name", "")))


def worker_summary(beats: list[dict[str, Any]]) -> list[str]:
    """One line per worker kind for `status`, from their heartbeats: how many run, and the
    overrides they apply."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for b in beats:
        by_kind.setdefault(b["kind"], []).append(b)
    lines = []
    for kind, beats in sorted(by_kind.items()):
        applied = sorted({f"{k}={v}" for b in beats for k, v in b.get("overrides", {}).items()})
        extra = f", overrides {', '.join(applied)}" if applied else ""
        lines.append(f"workers {kind}: {len(beats)} running{extra}")
    return lines
