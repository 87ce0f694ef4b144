"""Connecting to Redis at the edge: an embedded Valkey when no URL is set, server errors as one
line (workers/_edge.py), and the cluster client when REDIS_URL names a Redis Cluster."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException

from streams import connect_auto, detect_server, parse_cluster_setting, redis_url_or_embedded
from workers._edge import redis_errors
from workers._errors import ServerError, SettingError


def cluster_setting() -> bool | None:
    """STREAMFILL_REDIS_CLUSTER: auto (or unset) -> None, yes -> True, no -> False.

    Read here, outside the settings layer: it decides which client every command gets, before
    any settings are resolved (docs/cluster.md).
    """
    try:
        return parse_cluster_setting(os.environ.get("STREAMFILL_REDIS_CLUSTER", ""))
    except ValueError as exc:
        raise SettingError(str(exc)) from None


@contextlib.asynccontextmanager
async def redis_session(url: str | None) -> AsyncIterator[aioredis.Redis]:
    """A connected, version-checked client; an embedded Valkey when `url` is empty.

    Redis connection, credential and version errors, at start or later in the block, become a
    ServerError naming the URL (password masked). A Redis Cluster (STREAMFILL_REDIS_CLUSTER=yes,
    or `auto` and the server says so) gets the cluster client, typed as the plain one: the
    runtime's operations that differ on it check `streams.is_cluster` (docs/cluster.md).
    """
    setting = cluster_setting()
    with contextlib.ExitStack() as stack:
        try:
            resolved = stack.enter_context(redis_url_or_embedded(url))
        except RuntimeError as exc:  # no REDIS_URL and no embedded server installed
            raise ServerError(str(exc)) from exc
        with redis_errors(resolved):
            client = await connect_auto(resolved, cluster=setting)
            try:
                try:
                    await detect_server(client)
                except RedisClusterException as exc:  # `yes`, but the server is no cluster
                    raise ServerError(f"STREAMFILL_REDIS_CLUSTER=yes: {exc}".splitlines()[0]) from None
                yield cast(aioredis.Redis, client)
            finally:
                await client.aclose()
