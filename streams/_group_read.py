"""XREADGROUP for one stream, its replies left raw, at the node of the stream's slot on a cluster."""

from __future__ import annotations

from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.exceptions import ClusterDownError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams._cluster import FAILOVER_PAUSE_S, is_cluster


class GroupReader:
    """Reads one stream for a consumer group, as (id, flat field list) rows straight off the wire."""

    def __init__(self, redis: aioredis.Redis, stream: str) -> None:
        self._redis = redis
        self._stream = stream
        # Same pool, but XREADGROUP replies come back unparsed: building entries straight from the
        # wire reply skips redis-py's intermediate tuples (a third of the per-entry cost).
        self._options: dict[str, Any] = {}
        if is_cluster(redis):
            # The cluster client has one pool per node, no `connection_pool`: its own XREADGROUP
            # replies are made raw (the runtime's consumers are its only XREADGROUP callers), and
            # the node is named, which spares redis-py a COMMAND GETKEYS per read (docs/cluster.md).
            self._raw: Any = redis
            self._options["target_nodes"] = None  # found at each read (the slot map may not be read yet)
        else:
            self._raw = aioredis.Redis(connection_pool=redis.connection_pool)
        self._raw.set_response_callback("XREADGROUP", lambda response, **options: response)

    async def read(self, group: str, consumer: str, count: int, block_ms: int | None, next_id: str) -> Any:
        """`XREADGROUP GROUP group consumer COUNT count [BLOCK ms] STREAMS stream next_id`: its rows."""
        args: list[object] = ["GROUP", group, consumer, "COUNT", count]
        args += ["BLOCK", block_ms] if block_ms is not None else []
        command = ("XREADGROUP", *args, "STREAMS", self._stream, next_id)
        if self._options:
            return _rows(await self._at_node(command))
        return _rows(await self._raw.execute_command(*command))

    async def _at_node(self, command: tuple[object, ...]) -> Any:
        """XREADGROUP at the node of the stream's slot, found anew for every read.

        redis-py does not retry a command given its node; here a lost node is retried like any
        other command (ClusterClient pauses after the error, and the slot map is re-read), for
        as many attempts as the client's retry allows, so a read outlasts a failover.
        """
        attempts = 1 + self._redis.retry.get_retries()  # type: ignore[attr-defined]
        lost = (RedisConnectionError, RedisTimeoutError, ClusterDownError, SlotNotCoveredError)
        for attempt in range(attempts):
            try:
                if attempt:  # re-read the slot map (it may still name the dead master: retry)
                    self._redis._initialize = True  # type: ignore[attr-defined]
                await self._redis.initialize()  # a no-op once read
                self._options["target_nodes"] = self._redis.get_node_from_key(self._stream)  # type: ignore[attr-defined]
                return await self._raw.execute_command(*command, **self._options)
            except lost:
                if attempt == attempts - 1:
                    raise
                await anyio.sleep(FAILOVER_PAUSE_S)
        raise AssertionError("unreachable")


def _rows(reply: Any) -> Any:
    """The entries of a raw single-stream XREADGROUP reply (RESP3 map or RESP2 array)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return reply[0][1]
