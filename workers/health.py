"""What `status` says about workers beyond the streams: paused throttles and readiness reasons."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from streams import Keys, StreamNames
from streams.admin import partitions_of
from workers._readiness import status_reasons


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


async def status_readiness(redis: aioredis.Redis, keys: Keys, max_lag_s: float) -> list[dict[str, Any]]:
    """The reasons /readyz of an indexer would give that `status` can see: warmup and lag."""
    jobs = await partitions_of(redis, keys, StreamNames.REPO_BACKFILL)
    events = await partitions_of(redis, keys, StreamNames.FIREHOSE_BACKFILL)
    return await status_reasons(redis, keys, jobs, events, max_lag_s)


def readiness_line(reasons: list[dict[str, Any]]) -> str:
    """`ready`, or `not ready: warmup 42.0% (120 jobs left), lag 3.2s > 2.0s` (as /readyz says)."""
    if not reasons:
        return "readiness: ready"
    parts = []
    for r in reasons:
        if r["reason"] == "warmup":
            left = f"{r['remaining']} repo jobs, {r['remaining_events']} events left"
            parts.append(f"warmup {r['progress_pct']}% ({left})")
        elif r["reason"] == "lag":
            parts.append(f"lag {_age(r['lag_s'])} > {r['threshold_s']}s")
        else:
            parts.append(f"{r['reason']} {r.get('dependency', '')}: {r.get('error', '')}")
    return "readiness: not ready: " + ", ".join(parts)


def throttle_lines(states: list[dict[str, Any]]) -> list[str]:
    """One line per worker whose bulk production is paused on live lag."""
    return [
        f"throttled {s.get('worker')}: {s.get('reason')} {_age(float(s.get('lag_s', 0)))} "
        f"(paused above {s.get('pause_above_s')}s, resumes below {s.get('resume_below_s')}s)"
        for s in states
    ]
