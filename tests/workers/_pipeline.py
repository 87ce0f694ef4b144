"""Builders for worker configurations pointed at a devnet and a test key prefix."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from schemas import decode_entry
from tests._support import xrange
from workers.backfiller.config import BackfillerConfig
from workers.ingester.config import IngesterConfig


def ingester_config(redis_url: str, prefix: str, relay: str, **overrides: Any) -> IngesterConfig:
    """A listing ingester for one devnet relay: small pages and batches, so tests page a lot."""
    fields: dict[str, Any] = {
        "mode": "backfill",
        "relay_hosts": (relay,),
        "batch_size": 50,
        "batch_timeout_ms": 50,
        "max_consecutive_errors": 3,
        "skip_ahead": 10,
        "plc_url": "",
        "recheck_interval_s": 3600,
        "list_limit": 10,
        "allow_private_hosts": True,  # the devnet listens on loopback
    }
    return IngesterConfig(redis_url=redis_url, prefix=prefix, **(fields | overrides))


def backfiller_config(redis_url: str, prefix: str, plc_url: str, **overrides: Any) -> BackfillerConfig:
    """A backfiller for a devnet: fast, with few retries and small batches."""
    fields: dict[str, Any] = {
        "consumer": "b1",
        "concurrency": 4,
        "firehose_high_water": 1_000_000,
        "batch_size": 100,
        "http_timeout_s": 10.0,
        "max_deliveries": 3,
        "pds_rps": 1000.0,
        "max_repo_bytes": 64 * 1024**2,
        # Small, so that the larger devnet repos spill their blocks to a temporary file: the
        # backfiller tests then cover that path too.
        "repo_memory_bytes": 64 * 1024,
        "min_idle_ms": 30_000,
        "allow_private_hosts": True,  # the devnet listens on loopback
    }
    return BackfillerConfig(redis_url=redis_url, prefix=prefix, plc_url=plc_url, **(fields | overrides))


async def read_all(redis: aioredis.Redis, stream: str) -> list[Any]:
    """Every message of `stream`, decoded through its contract, in order."""
    out: list[Any] = []
    start = "-"
    while True:
        rows = await xrange(redis, stream, min=start, count=5000)
        out += [decode_entry(stream, fields) for _, fields in rows]
        if len(rows) < 5000:
            return out
        last = rows[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"


async def cursor_at(redis: aioredis.Redis, key: str, seq: int) -> bool:
    """Whether the cursor at `key` has reached `seq` (for wait_until)."""
    value = await redis.get(key)
    return value is not None and int(value) >= seq
