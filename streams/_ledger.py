"""The skip-ahead ledger: skipped cursor ranges, recorded atomically with the cursor that skips them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot

from streams._cluster import is_cluster
from streams._metrics import instruments
from streams._retry import SkipDecision


@dataclass(frozen=True, slots=True)
class SkippedRange:
    """A range of a cursor source that was skipped: [start, end) with why and when."""

    id: str
    start: str
    end: str
    failures: int
    reason: str
    at: float


async def record_skip(
    redis: aioredis.Redis, cursor_key: str, ledger_key: str, decision: SkipDecision, reason: str
) -> None:
    """Advance the cursor past the failing range and ledger the range, in one MULTI.

    On Redis Cluster the two keys are in different slots (no MULTI across slots): the ledger
    entry is written first, the cursor after, so a crash in between re-tries the range and
    ledgers it again (a duplicate entry), never skips it unrecorded.
    """
    entry = {
        "start": decision.skip_from,
        "end": decision.skip_to,
        "failures": str(decision.failures),
        "reason": reason[:2000],
        "at": f"{time.time():.3f}",
    }
    if is_cluster(redis) and key_slot(cursor_key.encode()) != key_slot(ledger_key.encode()):
        await redis.xadd(ledger_key, entry)  # type: ignore[arg-type]
        await redis.set(cursor_key, decision.skip_to)
    else:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.set(cursor_key, decision.skip_to)
            pipe.xadd(ledger_key, entry)  # type: ignore[arg-type]
            await pipe.execute()
    instruments().skipped_ranges.add(1, {"ledger": ledger_key})


async def skipped_ranges(redis: aioredis.Redis, ledger_key: str) -> list[SkippedRange]:
    rows: Any = await redis.xrange(ledger_key)
    out = []
    for entry_id, f in rows:
        d = {k.decode(): v.decode() for k, v in f.items()}
        out.append(
            SkippedRange(
                entry_id.decode(), d["start"], d["end"], int(d["failures"]), d["reason"], float(d["at"])
            )
        )
    return out


async def resolve_skipped(redis: aioredis.Redis, ledger_key: str, range_id: str) -> None:
    """Mark a skipped range as recovered (it was re-paged successfully)."""
    await redis.xdel(ledger_key, range_id)
