"""Reading configuration from the environment at the edge, and connecting to Redis."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from streams import Keys, connect, detect_server, redis_url_or_embedded


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"streamfill: {name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"streamfill: {name} must be a number, got {raw!r}") from None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> tuple[str, ...]:
    return tuple(p.strip() for p in os.environ.get(name, default).split(",") if p.strip())


def keys_from_env() -> Keys:
    return Keys(os.environ.get("STREAMFILL_PREFIX", ""))


@contextlib.asynccontextmanager
async def redis_session(url: str | None) -> AsyncIterator[aioredis.Redis]:
    """A connected, version-checked client; an embedded Valkey when `url` is empty."""
    with redis_url_or_embedded(url) as resolved:
        client = connect(resolved)
        try:
            await detect_server(client)
            yield client
        finally:
            await client.aclose()
