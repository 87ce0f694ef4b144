"""Connecting, and detecting the server once: Redis 7.0+ or Valkey 8+.

The runtime uses only commands both have (XAUTOCLAIM with its deleted-ids reply, XINFO GROUPS
with `lag`, XTRIM MINID, XGROUP CREATECONSUMER), so no code path is specific to a newer server.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis


class UnsupportedServer(RuntimeError):
    """The server is older than the runtime supports."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    flavor: str  # "redis" or "valkey"
    version: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.flavor} {'.'.join(map(str, self.version))}"


MINIMUM = {"redis": (7, 0), "valkey": (8, 0)}


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


async def detect_server(redis: aioredis.Redis) -> ServerInfo:
    """Read INFO server once; refuse servers older than Redis 7.0 / Valkey 8.0."""
    info = await redis.info("server")
    if "valkey_version" in info:
        server = ServerInfo("valkey", _parse(str(info["valkey_version"])))
    else:
        server = ServerInfo("redis", _parse(str(info["redis_version"])))
    if server.version < MINIMUM[server.flavor]:
        need = ".".join(map(str, MINIMUM[server.flavor]))
        raise UnsupportedServer(
            f"{server.label} is not supported: streamfill needs {server.flavor} >= {need}"
        )
    return server


def connect(url: str, **kwargs: object) -> aioredis.Redis:
    """A client for `url` (redis://, rediss:// with TLS, passwords in the URL)."""
    options: dict[str, object] = {"health_check_interval": 30, "socket_keepalive": True}
    options.update(kwargs)
    return aioredis.Redis.from_url(url, **options)  # type: ignore[arg-type]
