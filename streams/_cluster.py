"""Redis Cluster: telling a cluster from a single server, and a cluster client that outlasts a failover.

redis-py's async `RedisCluster` handles MOVED/ASK itself and, on a connection error, re-reads the
slot map and tries again, `retries` times. But it tries again at once: while a killed master's
replica is not yet promoted (cluster-node-timeout + election, 2 s to 20 s), the slot map still
names the dead master, and all retries are spent within ~0.1 s. `ClusterClient` pauses between
those attempts as redis-py's own pipeline and CLUSTERDOWN paths already do (0.25 s), and
`connect_cluster` sizes `retries` so that the attempts span `failover_timeout_s`. See
docs/cluster.md for what works on the cluster client and what does not.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# The pause redis-py takes before retrying a cluster pipeline or a CLUSTERDOWN reply; used for
# single commands too, so that one retry count means one span of time for both.
FAILOVER_PAUSE_S = 0.25

# Must outlast cluster-node-timeout (15 s by default) plus the replica's election (~1-2 s).
DEFAULT_FAILOVER_TIMEOUT_S = 30.0


class ClusterClient(RedisCluster):
    """redis-py's async cluster client whose retries after a lost node are spaced in time."""

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

    Commands, scripts and pipelines on a slot whose master died are retried for about
    `failover_timeout_s` before the error reaches the caller.
    """
    options: dict[str, Any] = {
        "socket_keepalive": True,
        # As for a single server: no read timeout, so blocking XREADGROUP may block for as long
        # as it asks (redis-py's cluster default of 5 s would cut longer blocks); a dead peer is
        # found by TCP keepalive or by the next connect.
        "socket_timeout": None,
        "retry": AsyncRetry(NoBackoff(), cluster_retries(failover_timeout_s)),
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
