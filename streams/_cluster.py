"""Redis Cluster: the cluster client, made to outlast a failover; the STREAMFILL_REDIS_CLUSTER setting.

redis-py's async `RedisCluster` handles MOVED/ASK itself and, on a connection error, re-reads the
slot map and tries again, `retries` times. For a single command it tries again at once: while a
killed master's replica is not yet promoted (cluster-node-timeout + election: seconds), the slot
map still names the dead master, and every retry is spent within ~0.1 s. Its three paths pause
differently: a non-transactional pipeline sleeps 0.25 s per retry, a MULTI pipeline takes the
`retry` object's backoff, a single command nothing. `ClusterClient` adds the same 0.25 s pause to
single commands, `connect_cluster` gives MULTI the same constant backoff, and sizes `retries` so
that the attempts of all three span `failover_timeout_s`. docs/cluster.md has the measurements,
and what works on the cluster client and what does not.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ConstantBackoff
from redis.exceptions import ClusterDownError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# The pause redis-py takes before retrying a cluster pipeline or a CLUSTERDOWN reply; used for
# single commands and MULTI too, so that one retry count means one span of time for all.
FAILOVER_PAUSE_S = 0.25

# Must outlast cluster-node-timeout (15 s by default) plus the replica's election (~1-2 s).
DEFAULT_FAILOVER_TIMEOUT_S = 30.0


class ClusterClient(RedisCluster):
    """redis-py's async cluster client whose retries after a lost node are spaced in time."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """As redis-py's, and then again while a failover lasts.

        redis-py's own retry loop re-reads the slot map before each attempt, and that read can
        itself fail on the dead master (its connection refused) and escape the loop, seconds
        before the replica is promoted. So the whole call is retried, paused, for the span the
        `retry` object gives (`failover_timeout_s`). Not a command sent to a named node: that
        node may be the dead one (its callers re-route, e.g. the consumer's reads).
        """
        if kwargs.get("target_nodes") is not None:
            return await super().execute_command(*args, **kwargs)
        deadline = time.monotonic() + self.retry.get_retries() * FAILOVER_PAUSE_S
        while True:
            try:
                return await super().execute_command(*args, **kwargs)
            except (RedisConnectionError, RedisTimeoutError, ClusterDownError):
                if time.monotonic() >= deadline:
                    raise
                self._initialize = True
                await anyio.sleep(FAILOVER_PAUSE_S)

    async def _execute_command(self, target_node: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._execute_command(target_node, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError):
            # redis-py has marked the slot map stale; its retry loop re-reads it on the next
            # attempt. Waiting first gives the cluster time to promote a replica.
            await anyio.sleep(FAILOVER_PAUSE_S)
            raise


def cluster_retries(failover_timeout_s: float) -> int:
    """How many spaced retries span `failover_timeout_s`."""
    return max(1, math.ceil(failover_timeout_s / FAILOVER_PAUSE_S))


def connect_cluster(
    url: str, *, failover_timeout_s: float = DEFAULT_FAILOVER_TIMEOUT_S, **kwargs: Any
) -> ClusterClient:
    """A cluster client seeded from `url` (any node; redis:// or rediss://, password in the URL).

    Commands, scripts, pipelines and MULTI on a slot whose master died are retried for about
    `failover_timeout_s` before the error reaches the caller.
    """
    options: dict[str, Any] = {
        "socket_keepalive": True,
        # As for a single server: no read timeout, so blocking XREADGROUP may block for as long
        # as it asks (redis-py's cluster default of 5 s would cut longer blocks); a dead peer is
        # found by TCP keepalive or by the next connect.
        "socket_timeout": None,
        # The count is what redis-py's three retry loops share; the backoff is MULTI's pause.
        "retry": AsyncRetry(ConstantBackoff(FAILOVER_PAUSE_S), cluster_retries(failover_timeout_s)),
    }
    options.update(kwargs)
    client = ClusterClient.from_url(url, **options)
    assert isinstance(client, ClusterClient)  # from_url builds `cls`; its annotation says the base
    return client


def parse_cluster_setting(raw: str) -> bool | None:
    """STREAMFILL_REDIS_CLUSTER: `auto`/empty -> None (ask the server), yes/no -> True/False."""
    value = raw.strip().lower()
    if value in {"", "auto"}:
        return None
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"STREAMFILL_REDIS_CLUSTER must be auto, yes or no, got {raw!r}")


def is_cluster(client: object) -> bool:
    """Whether `client` is redis-py's cluster client (the runtime's few cluster-only paths)."""
    return isinstance(client, RedisCluster)
