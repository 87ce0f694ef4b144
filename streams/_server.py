"""Connecting, and detecting the server once: Redis 7.0+ or Valkey 8+, single server or Cluster.

The runtime uses only commands both have (XAUTOCLAIM with its deleted-ids reply, XINFO GROUPS
with `lag`, XTRIM MINID, XGROUP CREATECONSUMER), so no code path is specific to a newer server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, overload

import redis.asyncio as aioredis

from streams._cluster import ClusterClient, connect_cluster
from streams._errors import UnsupportedServer


@dataclass(frozen=True, slots=True)
class ServerInfo:
    flavor: str  # "redis" or "valkey"
    version: tuple[int, ...]
    cluster: bool = False  # INFO cluster: cluster_enabled:1

    @property
    def label(self) -> str:
        return f"{self.flavor} {'.'.join(map(str, self.version))}"


MINIMUM = {"redis": (7, 0), "valkey": (8, 0)}


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


async def detect_server(redis: aioredis.Redis | ClusterClient) -> ServerInfo:
    """Read INFO server and cluster once; refuse servers older than Redis 7.0 / Valkey 8.0."""
    # Several sections in one INFO call exist since Redis 7.0, the oldest server we accept.
    info = await redis.info("server", "cluster")
    cluster = int(info.get("cluster_enabled", 0)) == 1
    if "valkey_version" in info:
        server = ServerInfo("valkey", _parse(str(info["valkey_version"])), cluster)
    else:
        server = ServerInfo("redis", _parse(str(info["redis_version"])), cluster)
    if server.version < MINIMUM[server.flavor]:
        need = ".".join(map(str, MINIMUM[server.flavor]))
        raise UnsupportedServer(
            f"{server.label} is not supported: streamfill needs {server.flavor} >= {need}"
        )
    return server


@overload
def connect(url: str, *, cluster: Literal[False] = False, **kwargs: Any) -> aioredis.Redis: ...
@overload
def connect(url: str, *, cluster: Literal[True], **kwargs: Any) -> ClusterClient: ...
@overload
def connect(url: str, *, cluster: bool, **kwargs: Any) -> aioredis.Redis | ClusterClient: ...
def connect(url: str, *, cluster: bool = False, **kwargs: Any) -> aioredis.Redis | ClusterClient:
    """A client for `url` (redis://, rediss:// with TLS, passwords in the URL).

    `cluster=True` gives redis-py's cluster client seeded from `url` (streams/_cluster.py);
    `connect_auto` asks the server which one it needs.
    """
    if cluster:
        return connect_cluster(url, **kwargs)
    options: dict[str, Any] = {"health_check_interval": 30, "socket_keepalive": True}
    options.update(kwargs)
    return aioredis.Redis.from_url(url, **options)


async def connect_auto(
    url: str, *, cluster: bool | None = None, **kwargs: Any
) -> aioredis.Redis | ClusterClient:
    """`connect(url, cluster=...)`, where `cluster=None` asks the server (`INFO cluster`).

    The probe is the plain client itself: a server that is not in cluster mode costs nothing
    more than one INFO call.
    """
    if cluster:
        return connect_cluster(url, **kwargs)
    plain: aioredis.Redis = connect(url, **kwargs)
    if cluster is False:
        return plain
    try:
        info = await plain.info("cluster")
    except BaseException:
        await plain.aclose()
        raise
    if int(info.get("cluster_enabled", 0)) != 1:
        return plain
    await plain.aclose()
    return connect_cluster(url, **kwargs)
