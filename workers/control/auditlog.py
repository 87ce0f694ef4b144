"""Reading and trimming the audit stream (`{action, operator, args, at}` entries).

Times come from entry ids (Redis time when the entry was written); `--since` and the retention
cut-off are computed from Redis `TIME`, never the local clock, so a skewed operator machine can
neither hide entries nor trim newer ones.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from streams import Keys

DAY_MS = 86_400_000


async def redis_now_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _s(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _entry(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    f = {_s(k): _s(v) for k, v in fields.items()}
    try:
        args = json.loads(f.get("args", "{}"))
    except ValueError:
        args = {"raw": f.get("args", "")}
    ident = _s(entry_id)
    return {
        "id": ident,
        "at_ms": int(ident.split("-", 1)[0]),
        "action": f.get("action", ""),
        "operator": f.get("operator", ""),
        "args": args,
    }


async def read_audit(
    redis: aioredis.Redis,
    keys: Keys,
    *,
    since_ms: int | None = None,
    action: str | None = None,
    action_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """Audit entries, oldest first, from `since_ms` (Redis time), of one action or action prefix."""
    start = "-" if since_ms is None else f"{since_ms}-0"
    out = []
    while True:
        rows: list[Any] = await redis.xrange(keys.audit(), min=start, max="+", count=1000) or []
        for entry_id, fields in rows:
            e = _entry(entry_id, fields)
            if action and e["action"] != action:
                continue
            if action_prefix and not e["action"].startswith(action_prefix):
                continue
            out.append(e)
        if len(rows) < 1000:
            return out
        start = "(" + _s(rows[-1][0])


async def trim_audit(redis: aioredis.Redis, keys: Keys, retention_days: float) -> int:
    """Remove audit entries older than `retention_days` (by Redis time); returns how many."""
    cutoff = await redis_now_ms(redis) - int(retention_days * DAY_MS)
    return int(await redis.xtrim(keys.audit(), minid=f"{cutoff}-0", approximate=False))
