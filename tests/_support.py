"""Test helpers: wait on conditions, never on fixed sleeps; typed reads of a bytes Redis client."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast, overload

import anyio
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

from atp.netpolicy import NetPolicy
from streams import ClusterClient

T = TypeVar("T")

# Devnets and test servers listen on loopback: tests that talk to them allow private hosts
# (tests/atp_net/test_netpolicy.py checks the policy itself, on and off).
LOOPBACK = NetPolicy(allow_private=True)


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[T]], *, timeout: float = ..., interval: float = ..., what: str = ...
) -> T: ...
@overload
async def wait_until(
    predicate: Callable[[], T], *, timeout: float = ..., interval: float = ..., what: str = ...
) -> T: ...
async def wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float = 20.0,
    interval: float = 0.02,
    what: str = "",
) -> object:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
        await anyio.sleep(interval)


# The tests' clients are bytes clients (redis-py's default, `decode_responses=False`) on RESP2.
# redis-py annotates its replies for every kind of client (`bytes | str`, RESP2 and RESP3 shapes,
# `None` for a deleted entry): these helpers state once the shape a bytes client gets, so that
# tests index replies with real types.
Client = aioredis.Redis | ClusterClient
Row = tuple[bytes, dict[bytes, bytes]]


def xfields(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[FieldT, EncodableT]:
    """`fields` as `XADD` takes them (redis-py wants a `dict` of its own, invariant, key type)."""
    return dict(fields.items())


async def xadd(
    redis: Client, stream: str, fields: Mapping[bytes, bytes] | Mapping[str, str], **kw: Any
) -> bytes:
    """`XADD`: the new entry's id."""
    return cast(bytes, await redis.xadd(stream, xfields(fields), **kw))


async def xrange(
    redis: Client, stream: str, min: str = "-", max: str = "+", count: int | None = None
) -> list[Row]:
    """`XRANGE`: (id, fields) per entry."""
    return cast("list[Row]", await redis.xrange(stream, min, max, count))


async def xreadgroup(
    redis: Client,
    group: str,
    consumer: str,
    streams: Mapping[str, str],
    count: int | None = None,
    block: int | None = None,
) -> list[tuple[bytes, list[Row]]]:
    """`XREADGROUP`: (stream, rows) per stream with entries, none when it times out."""
    ids: dict[KeyT, StreamIdT] = dict(streams.items())
    reply = cast("list[list[Any]] | None", await redis.xreadgroup(group, consumer, ids, count, block))
    return [(name, rows) for name, rows in reply or []]


async def get(redis: Client, key: str) -> bytes | None:
    """`GET`."""
    return cast("bytes | None", await redis.get(key))


def as_redis(cluster: ClusterClient) -> aioredis.Redis:
    """A cluster client where the product takes a Redis: it serves the same commands (the workers'
    wiring, workers/_env.py, passes it on the same way)."""
    return cast(aioredis.Redis, cluster)


def node_of(cluster: ClusterClient, key: str) -> ClusterNode:
    """The master serving `key` (redis-py answers None when it does not know the slot yet)."""
    node = cluster.get_node_from_key(key)
    assert node is not None, key
    return node


def byte_fields(fields: Mapping[Any, Any]) -> dict[bytes, bytes]:
    """Entry fields as the converters build them: bytes names and values (checked)."""
    out = {k: v for k, v in fields.items() if isinstance(k, bytes) and isinstance(v, bytes)}
    assert len(out) == len(fields), fields
    return out
