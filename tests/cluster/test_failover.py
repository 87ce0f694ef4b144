"""Failover on a real cluster (3 masters, a replica each): a master is SIGKILLed, the cluster's own
failure detection promotes its replica, and the client finds it. Also what asynchronous
replication loses on failover, and how WAIT tells a writer about it beforehand."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from streams import ClusterClient, EmbeddedCluster, Keys, Node, connect
from tests._support import as_redis, node_of, wait_until, xrange, xreadgroup

pytestmark = pytest.mark.anyio

CURSOR_LUA = "redis.call('SET', KEYS[2], ARGV[2]); return redis.call('XADD', KEYS[1], '*', 'n', ARGV[1])"


@pytest.fixture
async def client(failover_cluster: EmbeddedCluster) -> AsyncIterator[ClusterClient]:
    client = connect(failover_cluster.url, cluster=True)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


async def write_replicated(client: ClusterClient, stream: str, n: int, *, timeout_ms: int = 5000) -> int:
    """XADD, then WAIT 1 on the same connection (same pipeline, same node); WAIT's reply."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.xadd(stream, {"n": str(n)})
        pipe.execute_command("WAIT", 1, timeout_ms, target_nodes=client.get_node_from_key(stream))
        _, replicas = await pipe.execute()
    return int(replicas)


async def failover(cluster: EmbeddedCluster, master: Node) -> Node:
    return await anyio.to_thread.run_sync(cluster.wait_failover, master)


async def test_the_client_rides_out_the_failover_of_a_master(
    failover_cluster: EmbeddedCluster, client: ClusterClient, prefix: str
) -> None:
    keys = Keys(prefix)
    stream = keys.partition("s", 0, 3)
    cursor = keys.dlq(stream) + ":cursor"  # any key with the stream's hash tag
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    script = client.register_script(CURSOR_LUA)
    for n in range(10):
        assert await write_replicated(client, stream, n) == 1
    master = failover_cluster.node_for_key(stream)
    plain = RedisCluster.from_url(failover_cluster.url)  # redis-py's defaults, for comparison
    await plain.initialize()
    try:
        failover_cluster.kill(master)
        killed_at = time.monotonic()
        # redis-py alone spends its retries in a fraction of a second and gives up, long
        # before the replica can be promoted (that takes at least the node timeout).
        with pytest.raises(RedisConnectionError):
            await plain.xadd(stream, {"n": "plain"})
        assert time.monotonic() - killed_at < failover_cluster.options.node_timeout_ms / 1000
    finally:
        await plain.aclose()
    # Ours waits through the window on each of redis-py's three paths and lands on the promoted
    # replica: a script (a single command), a pipeline and a MULTI, all started while it is dead.
    replies: dict[str, object] = {}

    async def command() -> None:
        replies["script"] = await script(keys=[stream, cursor], args=["10", "10"])

    async def pipeline() -> None:
        async with client.pipeline(transaction=False) as pipe:
            pipe.xadd(stream, {"n": "11"})
            pipe.xlen(keys.dlq(stream))
            replies["pipeline"] = await pipe.execute()

    async def transaction() -> None:
        async with client.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.dlq(stream), {"n": "12"})
            pipe.incr(cursor + ":multi")
            replies["multi"] = await pipe.execute()

    async with anyio.create_task_group() as tg:
        for call in (command, pipeline, transaction):
            tg.start_soon(call)
    window_s = time.monotonic() - killed_at
    assert set(replies) == {"script", "pipeline", "multi"}
    promoted = await failover(failover_cluster, master)
    assert node_of(client, stream).port == promoted.port
    print(f"failover window seen by the client: {window_s:.2f}s (node timeout 2s)")
    # The promoted replica has the replicated entries, the group, and takes every kind of call.
    reply = await xreadgroup(client, "g", "c", {stream: ">"}, count=100)
    assert sorted(int(f[b"n"]) for _, f in reply[0][1]) == list(range(12))
    async with client.pipeline(transaction=False) as pipe:
        pipe.xack(stream, "g", *[i for i, _ in reply[0][1]])
        pipe.get(cursor)
        pipe.get(cursor + ":multi")
        pipe.xlen(keys.dlq(stream))
        assert await pipe.execute() == [12, b"10", b"1", 1]
    assert await write_replicated(client, stream, 11, timeout_ms=100) == 0  # no replica left


async def test_a_write_not_yet_replicated_is_lost_on_failover_and_wait_says_so(
    failover_cluster: EmbeddedCluster, client: ClusterClient, prefix: str
) -> None:
    keys = Keys(prefix)
    stream = keys.partition("s", 0, 3)
    master = failover_cluster.node_for_key(stream)
    # The source cursor of that data lives elsewhere, as a cursor shared by partitions would.
    cursor = next(
        k
        for k in (keys.partition("cursor", i, 3) for i in range(3))
        if failover_cluster.node_for_key(k).node_id != master.node_id
    )
    assert await write_replicated(client, stream, 1) == 1
    await client.set(cursor, "1")
    (replica,) = failover_cluster.replicas_of(master)
    # Cut replication deterministically: freeze the replica, drop its link, write.
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        assert master.command("CLIENT", "KILL", "TYPE", "replica") == 1
        # One batch over two masters: WAIT answers per node (per connection), so each node's
        # writes need their own WAIT, routed there. Here one is on a replica, one is not.
        async with client.pipeline(transaction=False) as pipe:
            pipe.xadd(stream, {"n": "2"})
            pipe.execute_command("WAIT", 1, 300, target_nodes=client.get_node_from_key(stream))
            pipe.set(keys.dlq(cursor), "2")  # a key on the cursor's (healthy) master
            pipe.execute_command("WAIT", 1, 5000, target_nodes=client.get_node_from_key(cursor))
            assert (await pipe.execute())[1:] == [0, True, 1]  # entry 2: acked, on no replica
        await client.set(cursor, "2")  # what a writer that ignores WAIT's answer would do next
        failover_cluster.kill(master)
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    assert (await failover(failover_cluster, master)).node_id == replica.node_id
    entries = await xrange(client, stream)
    assert [f[b"n"] for _, f in entries] == [b"1"]  # the acked entry 2 is gone ...
    assert await client.get(cursor) == b"2"  # ... and the cursor says it was written: silent loss


async def test_partitioned_producer_and_consumers_ride_out_a_failover_and_lose_nothing_acknowledged(
    failover_cluster: EmbeddedCluster, client: ClusterClient, prefix: str
) -> None:
    """Writers (WAIT 1) and one consumer per partition run while the master of a partition is
    SIGKILLed, its replica promoted, and the old master restarted as a replica: every entry of
    every acknowledged send is consumed (duplicates allowed), and the cursor written after each
    send never covers a lost one."""
    from collections.abc import Sequence

    from streams import (
        DONE,
        ConsumerConfig,
        Entry,
        Outcome,
        PartitionedConsumer,
        PartitionedProducer,
        Partitioning,
        ProducerConfig,
    )

    keys = Keys(prefix)
    parts = Partitioning(keys, {"records": 3})
    stream = keys.stream("records")
    producer = PartitionedProducer(
        as_redis(client), ProducerConfig(stream, high_water=None), parts, wait_replicas=1, wait_timeout_ms=500
    )
    cursor = keys.cursor("records", "src")
    acknowledged: list[str] = []
    seen: set[bytes] = set()

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        seen.update(e.fields[b"n"] for e in entries)
        return [DONE] * len(entries)

    config = ConsumerConfig(stream, "g", "c", batch_size=50, block_ms=100, min_idle_ms=3000)
    consumer = PartitionedConsumer(as_redis(client), config, handler, parts.partition_keys("records"))
    stop_writing = anyio.Event()

    async def write() -> None:
        n = 0
        while not stop_writing.is_set():
            batch = [{"did": f"did:plc:{n}-{i}", "n": f"{n}-{i}"} for i in range(20)]
            await producer.send(batch, cursor=(cursor, str(n)))
            acknowledged.extend(f["n"] for f in batch)
            n += 1

    victim = failover_cluster.node_for_key(parts.partition_keys("records")[0])
    async with anyio.create_task_group() as tg:
        await tg.start(consumer.run)
        tg.start_soon(write)
        await wait_until(lambda: len(acknowledged) >= 400, timeout=60, what="400 writes before the failover")
        await anyio.to_thread.run_sync(failover_failover_and_return, failover_cluster, victim)
        before = len(acknowledged)
        await wait_until(  # the writers go on after the failover
            lambda: len(acknowledged) >= before + 400, timeout=60, what="400 writes after the failover"
        )
        stop_writing.set()
        await wait_until(
            lambda: {a.encode() for a in acknowledged} <= seen, timeout=60, what="every write consumed"
        )
        consumer.stop()
    assert {a.encode() for a in acknowledged} <= seen
    assert int(await client.get(cursor) or 0) >= before // 20 - 1


def failover_failover_and_return(cluster: EmbeddedCluster, master: Node) -> None:
    cluster.kill(master)
    cluster.wait_failover(master)
    cluster.restart(master)
