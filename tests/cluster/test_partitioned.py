"""Partitioned logical streams on Redis Cluster (and on one server): routing by DID, one script
call per slot, cursors after their data, WAIT, one consumer per partition sharing a handler."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.lowlevel
import msgspec
import pytest
import redis.asyncio as aioredis

from streams import (
    DONE,
    ClusterClient,
    Consumer,
    ConsumerConfig,
    DeadLetter,
    Entry,
    Keys,
    Mark,
    Outcome,
    PartitionedConsumer,
    PartitionedProducer,
    Partitioning,
    Producer,
    ProducerConfig,
    ReplicationLagError,
    connect,
    partition_index,
)
from tests._support import as_redis, node_of, xrange

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cluster(redis_cluster_url: str) -> AsyncIterator[ClusterClient]:
    client = connect(redis_cluster_url, cluster=True)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


def dids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"did:plc:{rng.getrandbits(64):016x}" for _ in range(n)]


async def test_the_runtime_classes_run_on_the_cluster_client(cluster: ClusterClient, prefix: str) -> None:
    """Producer (raw EVALSHA, NOSCRIPT reload) and Consumer (raw reader, node given) on the cluster."""
    keys = Keys("{" + prefix + "}")  # one slot: the stream, its cursor and its DLQ
    stream = keys.stream("out")
    producer = Producer(as_redis(cluster), ProducerConfig(stream, high_water=100))
    await cluster.script_flush()  # every master forgets the script: the producer reloads it
    ids = await producer.send([{"n": str(i)} for i in range(5)], cursor=(keys.cursor("out", "h"), "5"))
    assert len(ids) == 5 and await cluster.get(keys.cursor("out", "h")) == b"5"
    seen: list[bytes] = []

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        seen.extend(e.fields[b"n"] for e in entries)
        return [DeadLetter("odd") if int(e.fields[b"n"]) % 2 else DONE for e in entries]

    consumer = Consumer(as_redis(cluster), ConsumerConfig(stream, "g", "c", block_ms=50), handler)
    await consumer.run_until_idle()
    assert sorted(seen) == [b"0", b"1", b"2", b"3", b"4"]
    assert await cluster.xlen(keys.dlq(stream)) == 2
    assert (await cluster.xpending(stream, "g"))["pending"] == 0


async def test_a_dlq_in_another_slot_is_written_before_the_ack(cluster: ClusterClient, prefix: str) -> None:
    """No hash tag: `<stream>:dlq` is elsewhere, MULTI would be refused; written first, then acked."""
    stream = f"{prefix}:untagged"
    assert cluster.keyslot(stream) != cluster.keyslot(f"{stream}:dlq")
    await cluster.xadd(stream, {"n": "1"})

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        return [DeadLetter("no")] * len(entries)

    await Consumer(as_redis(cluster), ConsumerConfig(stream, "g", "c", block_ms=50), handler).run_until_idle()
    assert await cluster.xlen(f"{stream}:dlq") == 1
    assert (await cluster.xpending(stream, "g"))["pending"] == 0


async def test_entries_are_routed_by_did_and_cursors_follow_their_data(
    cluster: ClusterClient, prefix: str
) -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    keys = Keys(prefix)
    n = 6
    partitioning = Partitioning(keys, {"records": n, "jobs": 3})
    stream = keys.stream("records")
    producer = PartitionedProducer(as_redis(cluster), ProducerConfig(stream, high_water=None), partitioning)
    parts = partitioning.partition_keys("records")
    assert len({node_of(cluster, p).name for p in parts}) == 3  # spread over the masters
    await cluster.script_flush()
    repos = dids(40, seed)
    batch = [{"did": did, "n": str(i)} for i, did in enumerate(repos * 3)]
    extra = [(keys.stream("jobs"), {"did": did}) for did in repos[:7]]
    cursor = keys.cursor("records", "relay")  # in a slot of its own
    ids = await producer.send(batch, cursor=(cursor, "120"), extra=extra)
    assert len(ids) == 120 and all(ids)
    assert await cluster.get(cursor) == b"120"
    total = 0
    for i, part in enumerate(parts):
        rows = await xrange(cluster, part)
        total += len(rows)
        for _, fields in rows:  # every entry of a DID in its partition, in the order sent
            assert partition_index(fields[b"did"], n) == i
        per_did: dict[bytes, list[int]] = {}
        for _, fields in rows:
            per_did.setdefault(fields[b"did"], []).append(int(fields[b"n"]))
        assert all(v == sorted(v) for v in per_did.values())
    assert total == 120
    assert sum([await cluster.xlen(p) for p in partitioning.partition_keys("jobs")]) == 7
    assert {p: await cluster.xlen(p) for p in parts} == {
        p: sum(1 for f in batch if partition_index(f["did"], n) == i) for i, p in enumerate(parts)
    }


async def test_wait_without_a_replica_refuses_to_advance_the_cursor(
    cluster: ClusterClient, prefix: str
) -> None:
    """No replicas here: WAIT 1 answers 0, the batch is not acknowledged and the cursor stays."""
    keys = Keys(prefix)
    partitioning = Partitioning(keys, {"records": 3})
    producer = PartitionedProducer(
        as_redis(cluster),
        ProducerConfig(keys.stream("records"), high_water=None),
        partitioning,
        wait_replicas=1,
        wait_timeout_ms=50,
        wait_retry_s=0.3,
    )
    cursor = keys.cursor("records", "relay")
    with pytest.raises(ReplicationLagError, match="confirmed 0"):
        await producer.send([{"did": d} for d in dids(10, 1)], cursor=(cursor, "10"))
    assert await cluster.get(cursor) is None


async def test_per_partition_backpressure(cluster: ClusterClient, prefix: str) -> None:
    keys = Keys(prefix)
    partitioning = Partitioning(keys, {"records": 3})
    stream = keys.stream("records")
    config = ProducerConfig(stream, high_water=30, low_water=15, poll_interval_s=0.01)
    producer = PartitionedProducer(as_redis(cluster), config, partitioning)
    did = dids(1, 2)[0]
    target = partitioning.route(stream, {"did": did})
    await cluster.xgroup_create(target, "g", id="0", mkstream=True)
    await producer.send([{"did": did}] * 10)  # the per-partition mark is ceil(30 / 3) = 10
    assert producer.statistics().backlog == 10
    consumed = anyio.Event()

    async def drain() -> None:
        await cluster.xreadgroup("g", "c", {target: ">"}, count=100)
        await cluster.xack(target, "g", *[i for i, _ in await xrange(cluster, target)])
        consumed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer.send, [{"did": did}])  # blocks until the partition is drained
        await anyio.wait_all_tasks_blocked()
        assert producer.statistics().blocked
        await drain()
    assert consumed.is_set() and producer.statistics().waits == 1
    assert await cluster.xlen(target) == 11


async def test_consumers_cover_every_partition_with_one_concurrency_bound(
    cluster: ClusterClient, prefix: str
) -> None:
    keys = Keys(prefix)
    partitioning = Partitioning(keys, {"records": 6})
    stream = keys.stream("records")
    producer = PartitionedProducer(as_redis(cluster), ProducerConfig(stream, high_water=None), partitioning)
    sent = [{"did": d, "n": str(i)} for i, d in enumerate(dids(300, 3))]
    await producer.send(sent)
    seen: list[bytes] = []
    running = peak = 0

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.lowlevel.checkpoint()
        seen.extend(e.fields[b"n"] for e in entries)
        running -= 1
        return [DeadLetter("x") if e.fields[b"n"] == b"7" else DONE for e in entries]

    config = ConsumerConfig(stream, "g", "c", batch_size=10, concurrency=2, block_ms=50)
    consumer = PartitionedConsumer(as_redis(cluster), config, handler, partitioning.partition_keys("records"))
    await consumer.run_until_idle()
    assert sorted(seen) == sorted(f["n"].encode() for f in sent)
    assert peak <= 2
    stats = consumer.statistics()
    assert (stats.acked, stats.dead_lettered) == (299, 1)
    seven = partitioning.route(stream, sent[7])
    assert await cluster.xlen(keys.dlq(seven)) == 1  # the partition's DLQ, in its slot


async def test_partitions_on_one_server_write_in_one_atomic_call(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    partitioning = Partitioning(keys, {"records": 4})
    stream = keys.stream("records")
    producer = PartitionedProducer(redis_client, ProducerConfig(stream, high_water=1000), partitioning)
    cursor = keys.cursor("records", "relay")
    await producer.send([{"did": d} for d in dids(50, 4)], cursor=(cursor, "50"))
    assert await redis_client.get(cursor) == b"50"
    lengths = [await redis_client.xlen(p) for p in partitioning.partition_keys("records")]
    assert sum(lengths) == 50 and all(lengths)
    # One partition is today's key, unchanged.
    single = Partitioning(keys, {"records": 1})
    assert single.partition_keys("records") == [stream]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_operator_commands_act_on_every_partition(
    cluster: ClusterClient, redis_cluster_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    partitioning = Partitioning(keys, {"records": 3})
    stream = keys.stream("records")
    producer = PartitionedProducer(as_redis(cluster), ProducerConfig(stream, high_water=None), partitioning)
    sent = [{"did": d, "n": str(i)} for i, d in enumerate(dids(60, 8))]
    await producer.send(sent)
    await cluster.xadd(keys.dlq(stream), {"reason": "refused before routing"})  # the logical DLQ

    async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
        return [DeadLetter("x") if int(e.fields[b"n"]) % 10 == 0 else DONE for e in entries]

    config = ConsumerConfig(stream, "g", "c", batch_size=7, block_ms=50)
    await PartitionedConsumer(
        as_redis(cluster), config, handler, partitioning.partition_keys("records")
    ).run_until_idle()
    await producer.send([{"did": d, "n": "new"} for d in dids(9, 9)])  # lag: 9 over the partitions
    env = {"REDIS_URL": redis_cluster_url, "STREAMFILL_PREFIX": prefix}

    status = run_cli(env, "status", "--json", "--partitions")
    assert status.returncode == 0, status.stderr
    (doc,) = [d for d in json.loads(status.stdout)["streams"] if d["stream"] == stream]
    assert doc["length"] == 69 and doc["dlq_length"] == 6 + 1
    assert [(g["name"], g["lag"], g["pending"]) for g in doc["groups"]] == [("g", 9, 0)]
    assert [p["stream"] for p in doc["partitions"]] == partitioning.partition_keys("records")
    text = run_cli(env, "status", "--partitions").stdout
    assert f"{stream}  length=69" in text and "partitions=3" in text
    assert all(p in text for p in partitioning.partition_keys("records"))

    listed = run_cli(env, "dlq", "list", "records", "--count", "100")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 7, listed.stderr
    trimmed = run_cli(env, "trim", "records")
    counts = [line.split()[1] for line in trimmed.stdout.splitlines() if line.startswith("trimmed ")]
    assert trimmed.returncode == 0 and sum(int(n) for n in counts if n.isdigit()) == 60
    drain = run_cli(env, "groups", "drain", "records", "g", "--timeout", "0.2")
    assert drain.returncode == 1  # 9 entries nobody reads
    reset = run_cli(env, "groups", "reset", "records", "g", "--to", "$")
    assert reset.returncode == 0 and len(reset.stdout.splitlines()) == 3
    drain = run_cli(env, "groups", "drain", "records", "g", "--timeout", "5")
    assert drain.returncode == 0, drain.stderr
    purged = run_cli(env, "dlq", "purge", "records")
    assert sum(int(line.split()[1]) for line in purged.stdout.splitlines()) == 7


def test_the_did_is_found_in_the_message_without_decoding_it() -> None:
    from schemas import encode_entry
    from schemas._messages import RecordCreate, RepoJob
    from streams._routing import did_of

    record = b'{"did":"did:plc:nested","text":"a record that names another did"}'
    event = RecordCreate(
        seq=1, did="did:plc:owner", rev="r", collection="app.bsky.feed.post", rkey="k", cid="c",
        record=msgspec.Raw(record),
    )  # fmt: skip
    assert did_of(encode_entry("firehose_backfill", event)) == b"did:plc:owner"
    assert (
        did_of(encode_entry("repo_backfill", RepoJob(did="did:web:a.example", host="h")))
        == b"did:web:a.example"
    )
    assert did_of({"did": "did:plc:x", "event": "{}"}) == "did:plc:x"
    assert did_of({b"labels": b"[]"}) is None
    keys = Keys("p")
    parts = Partitioning(keys, {"firehose_backfill": 4})
    routed = parts.route(keys.stream("firehose_backfill"), encode_entry("firehose_backfill", event))
    assert routed == keys.partition("firehose_backfill", partition_index(b"did:plc:owner", 4), 4)


async def test_multi_key_steps_across_slots_write_the_record_first(
    cluster: ClusterClient, prefix: str
) -> None:
    """Skip-ahead (cursor + ledger) and DLQ replay on keys in two slots: no MULTI there, the
    record of the step first (the ledger entry; the entry put back), then the rest."""
    from streams import SkipDecision, record_skip, skipped_ranges
    from streams.admin import dlq_replay

    keys = Keys(prefix)
    cursor, ledger = keys.cursor("repo_backfill", "relay"), keys.ledger("repo_backfill", "relay")
    assert cluster.keyslot(cursor) != cluster.keyslot(ledger)
    await record_skip(as_redis(cluster), cursor, ledger, SkipDecision(False, "100", "200", 3), "boom")
    assert await cluster.get(cursor) == b"200"
    assert [(r.start, r.end) for r in await skipped_ranges(as_redis(cluster), ledger)] == [("100", "200")]
    stream = keys.stream("label_live")
    assert cluster.keyslot(stream) != cluster.keyslot(keys.dlq(stream))
    await cluster.xadd(keys.dlq(stream), {"labels": "[]", "reason": "x"})
    assert await dlq_replay(as_redis(cluster), keys, stream) == 1
    assert await cluster.xlen(stream) == 1 and await cluster.xlen(keys.dlq(stream)) == 0


@pytest.mark.parametrize("on_cluster", [True, False], ids=["cluster", "one-server"])
async def test_listed_register_marks_travel_with_their_partition(
    cluster: ClusterClient, redis_client: aioredis.Redis, prefix: str, on_cluster: bool
) -> None:
    """A listing's jobs and their register marks are written by one call per partition (the
    bucket is in the partition's slot); the same (did, rev, active) listed again writes nothing,
    a newer rev does, and the cursor is written after the data."""
    from schemas import RepoJob, encode_entry
    from workers.ingester.register import listed_mark

    client: aioredis.Redis = as_redis(cluster) if on_cluster else redis_client
    keys = Keys(prefix)
    parts = Partitioning(keys, {"repo_backfill": 3})
    stream = keys.stream("repo_backfill")
    producer = PartitionedProducer(client, ProducerConfig(stream, high_water=None), parts)
    listed = dids(12, seed=5)

    def page(rev: str) -> tuple[list[dict[bytes, bytes]], list[Mark | None]]:
        jobs = [encode_entry("repo_backfill", RepoJob(did=d, host="h", rev=rev)) for d in listed]
        return jobs, [listed_mark(keys, "repo_backfill", d, rev, True, partitions=3) for d in listed]

    cursor = keys.cursor("repo_backfill", "h")
    ids = await producer.send_marked(*page("3kaaaaaaaaaa2"), cursors=[(cursor, "1")])
    assert all(ids) and await client.get(cursor) == b"1"
    assert await producer.send_marked(*page("3kaaaaaaaaaa2")) == [None] * len(listed)
    assert all(await producer.send_marked(*page("3kaaaaaaaaaa3")))
    for did in listed:
        key = keys.partition("repo_backfill", partition_index(did, 3), 3)
        raw = b"".join(v for _, fields in await xrange(client, key) for v in fields.values())
        assert raw.count(did.encode()) == 2  # in its partition: two revs, each once


async def test_lag_seconds_over_partitions_on_their_nodes(cluster: ClusterClient, prefix: str) -> None:
    """Each partition's lag is read on its own master (its ids and TIME from one clock); the
    logical stream is as far behind as its worst partition."""
    from streams import lag_seconds

    keys = Keys(prefix)
    parts = [keys.partition("live", i, 3) for i in range(3)]
    for n, part in enumerate(parts):
        seconds, micros = await cluster.execute_command("TIME", target_nodes=cluster.get_node_from_key(part))
        now = int(seconds) * 1000 + int(micros) // 1000
        await cluster.xadd(part, {"n": "1"}, id=f"{now - 10_000 * (n + 1)}-0")
        await cluster.xgroup_create(part, "g", id="0")
    worst = await lag_seconds(as_redis(cluster), [(p, "g") for p in parts])
    assert 30.0 <= worst < 31.0
