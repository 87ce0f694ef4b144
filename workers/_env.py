"""Connecting to Redis at the edge: an embedded Valkey when no URL is set, and server errors as
one line (workers/_edge.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from streams import connect, detect_server, redis_url_or_embedded
from workers._edge import redis_errors
from workers._errors import ServerError


@contextlib.asynccontextmanager
async def redis_session(url: str | None) -> AsyncIterator[aioredis.Redis]:
    """A connected, version-checked client; an embedded Valkey when `url` is empty.

    Redis connection, credential and version errors, at start or later in the block, become a
    ServerError naming the URL (password masked).
    """
    with contextlib.ExitStack() as stack:
        try:
            resolved = stack.enter_context(redis_url_or_embedded(url))
        except RuntimeError as exc:  # no REDIS_URL and no embedded server installed
            raise ServerError(str(exc)) from exc
        with redis_errors(resolved):
            client = connect(resolved)
            try:
                await detect_server(client)
                yield client
            finally:
                await client.aclose()
