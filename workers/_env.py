"""Connecting to Redis at the edge: an embedded Valkey when no URL is set, server errors as one
line (workers/_edge.py), and a Redis Cluster refused until the workers can run on one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from streams import ServerInfo, connect, detect_server, parse_cluster_setting, redis_url_or_embedded
from workers._edge import redis_errors
from workers._errors import ServerError, SettingError


def cluster_setting() -> bool | None:
    """STREAMFILL_REDIS_CLUSTER: auto (or unset) -> None, yes -> True, no -> False.

    Read here, outside the settings layer, until the workers run on Redis Cluster (issue #16):
    its only effect today is which servers are refused.
    """
    try:
        return parse_cluster_setting(os.environ.get("STREAMFILL_REDIS_CLUSTER", ""))
    except ValueError as exc:
        raise SettingError(str(exc)) from None


def refuse_cluster(server: ServerInfo, setting: bool | None) -> None:
    """A ServerError if REDIS_URL names a Redis Cluster: the workers cannot run on one yet.

    A plain client on a cluster node would fail with MOVED on every key of another node's slots,
    somewhere in the middle of a run; better one line at the start. STREAMFILL_REDIS_CLUSTER=no
    lets a cluster-mode server through when that one node serves every slot.
    """
    if setting is True or (setting is None and server.cluster):
        detected = "REDIS_URL names a Redis Cluster (cluster_enabled:1)"
        why = "STREAMFILL_REDIS_CLUSTER=yes" if setting else detected
        raise ServerError(
            f"{why}; the workers do not run on Redis Cluster yet (docs/cluster.md): "
            "point REDIS_URL at a single primary"
        )


@contextlib.asynccontextmanager
async def redis_session(url: str | None) -> AsyncIterator[aioredis.Redis]:
    """A connected, version-checked client; an embedded Valkey when `url` is empty.

    Redis connection, credential and version errors, at start or later in the block, become a
    ServerError naming the URL (password masked); so does a Redis Cluster (`refuse_cluster`).
    """
    setting = cluster_setting()
    with contextlib.ExitStack() as stack:
        try:
            resolved = stack.enter_context(redis_url_or_embedded(url))
        except RuntimeError as exc:  # no REDIS_URL and no embedded server installed
            raise ServerError(str(exc)) from exc
        with redis_errors(resolved):
            client = connect(resolved)
            try:
                refuse_cluster(await detect_server(client), setting)
                yield client
            finally:
                await client.aclose()
