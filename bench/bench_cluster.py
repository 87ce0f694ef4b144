"""Redis Cluster: does the backfill path's Redis work spread over masters? And what does WAIT cost?

The backfill path between `firehose_backfill`'s writer and the indexer's reader, over P partition
streams (hash-tagged keys, `Keys.partition`), run on an embedded cluster of 1 master and on one of
3 masters in the same run, rounds interleaved. Per topology it prints the Redis CPU per record of
each master (`INFO cpu`: used_cpu_sys + used_cpu_user deltas), records/s, and the ratio of the
busiest of 3 masters' CPU per record to the single master's. Target: <= 0.4. On 2 cores the
wall-clock gain is limited (client and servers share them); the per-master CPU split is the figure.

Sides: `raw` writes each partition's batch with one EVALSHA (a script XADDing the batch, as the
Producer does) and reads with XREADGROUP + XACK and a no-op sink, every partition's call in one
cluster pipeline per round. `streamfill` is the runtime itself: PartitionedProducer.send of one
repo's 500 records at a time (routed by the DID in the message) from P concurrent writers, and a
PartitionedConsumer (one Consumer per partition) with a no-op handler; reported against `raw` of
the same run.

Then `WAIT 1 <timeout>` on a master with one replica: the cost per call of making a write wait for
its replica (in the same pipeline, same connection), for a single XADD and for a 500-entry batch.

    uv run python bench/bench_cluster.py     # BENCH_ENTRIES=120000 BENCH_PARTITIONS=6 BENCH_ROUNDS=5
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Timer, report
from streams import (
    DONE,
    ClusterClient,
    ConsumerConfig,
    EmbeddedCluster,
    EmbeddedClusterOptions,
    Entry,
    Keys,
    Node,
    Outcome,
    PartitionedConsumer,
    PartitionedProducer,
    Partitioning,
    ProducerConfig,
    connect,
)

N = int(os.environ.get("BENCH_ENTRIES", "120000"))
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "6"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
BATCH = 500
WAIT_CALLS = int(os.environ.get("BENCH_WAIT_CALLS", "2000"))
# The firehose_backfill event of bench_streams: one like record.
PAYLOAD = (b'{"type":"create","seq":-1,"did":"did:plc:abcdefghijklmnopqrstuvwx","rev":"3l3qo2vutsw2b",'
           b'"collection":"app.bsky.feed.like","rkey":"3l3qo2vuowo2b","cid":"bafyreie5737gdxlw5i64vzichca'
           b'lba3z2v5n6icifvx5xytvske7mr3hpm","record":{"$type":"app.bsky.feed.like",'
           b'"createdAt":"2024-01-01T00:00:00Z"}}')  # fmt: skip
# XADD every ARGV value as one `event` entry: one command and one reply per batch.
XADD_BATCH = "for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', 'event', ARGV[i]) end return #ARGV"
GROUP = "firehose_group"


@dataclass(frozen=True)
class Side:
    """One way of driving the path: write N records over the partitions, then read them all."""

    name: str
    write: Callable[[ClusterClient, Sequence[str]], Awaitable[None]]
    read: Callable[[ClusterClient, Sequence[str]], Awaitable[int]]


async def raw_write(client: ClusterClient, streams: Sequence[str]) -> None:
    sha = await client.script_load(XADD_BATCH)  # SCRIPT LOAD goes to every master
    batch = [PAYLOAD] * BATCH
    for _ in range(N // (BATCH * len(streams))):
        async with client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.execute_command("EVALSHA", sha, 1, stream, *batch)
            await pipe.execute()


async def raw_read(client: ClusterClient, streams: Sequence[str]) -> int:
    # XREADGROUP's keys are "movable": unless told the node, redis-py asks the server where they
    # are (COMMAND GETKEYS, one more round trip to one node) on every call.
    nodes = {stream: client.get_node_from_key(stream) for stream in streams}
    done = 0
    while True:
        async with client.pipeline(transaction=False) as pipe:
            for stream in streams:
                args = ("GROUP", GROUP, "c", "COUNT", BATCH, "STREAMS", stream, ">")
                pipe.execute_command("XREADGROUP", *args, target_nodes=nodes[stream])
            replies = await pipe.execute()
        acks = [(s, [i for i, _ in r[0][1]]) for s, r in zip(streams, replies, strict=True) if r]
        if not acks:
            return done
        async with client.pipeline(transaction=False) as pipe:
            for stream, ids in acks:
                pipe.xack(stream, GROUP, *ids)  # the no-op sink: nothing but the ack
            done += sum(await pipe.execute())


def _did_payloads(count: int) -> list[bytes]:
    """The like event of PAYLOAD for `count` different repos (the partitions route by DID)."""
    return [PAYLOAD.replace(b"abcdefghijklmnopqrstuvwx", f"{i:024x}".encode()) for i in range(count)]


def _partitioning(streams: Sequence[str]) -> tuple[Partitioning, str]:
    prefix = streams[0].split(":{", 1)[0]
    keys = Keys(prefix)
    parts = Partitioning(keys, {"firehose_backfill": len(streams)})
    assert parts.partition_keys("firehose_backfill") == list(streams)
    return parts, keys.stream("firehose_backfill")


async def streamfill_write(client: ClusterClient, streams: Sequence[str]) -> None:
    """PartitionedProducer.send of one repo's batch at a time (as the backfiller sends), from as
    many concurrent writers as partitions (the raw side pipelines one batch per partition)."""
    parts, logical = _partitioning(streams)
    producer = PartitionedProducer(client, ProducerConfig(logical, high_water=None), parts)  # type: ignore[arg-type]
    payloads = _did_payloads(64)
    sends = N // BATCH // len(streams) * len(streams)

    async def writer(w: int) -> None:
        for j in range(w, sends, len(streams)):
            await producer.send([{b"event": payloads[j % len(payloads)]}] * BATCH)

    async with anyio.create_task_group() as tg:
        for w in range(len(streams)):
            tg.start_soon(writer, w)


async def streamfill_read(client: ClusterClient, streams: Sequence[str]) -> int:
    """PartitionedConsumer with a no-op handler, until every partition is idle."""
    _, logical = _partitioning(streams)
    done = 0

    async def sink(entries: Sequence[Entry]) -> Sequence[Outcome]:
        nonlocal done
        done += len(entries)
        return [DONE] * len(entries)

    config = ConsumerConfig(logical, GROUP, "c", batch_size=BATCH, concurrency=4, block_ms=20)
    await PartitionedConsumer(client, config, sink, list(streams)).run_until_idle()  # type: ignore[arg-type]
    return done


SIDES = [Side("raw", raw_write, raw_read), Side("streamfill", streamfill_write, streamfill_read)]


def cpu_s(node: Node) -> float:
    """CPU seconds the node's server process has used (INFO cpu: sys + user)."""
    info = node.client().info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@dataclass
class Round:
    cpu_per_record_us: list[float]  # one per master, sorted descending
    write_per_s: float
    read_per_s: float


async def run_round(cluster: EmbeddedCluster, side: Side, tag: str) -> Round:
    client = connect(cluster.url, cluster=True)
    await client.initialize()
    streams = [Keys(tag).partition("firehose_backfill", i, PARTITIONS) for i in range(PARTITIONS)]
    for stream in streams:
        await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    masters = [n for n in cluster.nodes if n.alive]
    before = [cpu_s(n) for n in masters]
    with Timer() as write:
        await side.write(client, streams)
    with Timer() as read:
        done = await side.read(client, streams)
    after = [cpu_s(n) for n in masters]
    written = N // (BATCH * PARTITIONS) * BATCH * PARTITIONS
    assert done == written, (done, written)
    for stream in streams:
        await client.delete(stream)
    await client.aclose()
    spent = [a - b for a, b in zip(after, before, strict=True)]
    per_record = sorted((s / written * 1e6 for s in spent), reverse=True)
    return Round(per_record, written / write.seconds, written / read.seconds)


async def compare(side: Side) -> list[dict[str, object]]:
    """ROUNDS pairs of rounds (1 master, 3 masters; which goes first alternates). The headline is
    the median over pairs of busiest-of-3 / single: paired, so that the load drifting on a shared
    machine moves both sides of a ratio together."""
    rounds: dict[int, list[Round]] = {1: [], 3: []}
    with (
        EmbeddedCluster(EmbeddedClusterOptions(masters=1)) as one,
        EmbeddedCluster(EmbeddedClusterOptions(masters=3)) as three,
    ):
        for r in range(ROUNDS):
            order = [(1, one), (3, three)] if r % 2 == 0 else [(3, three), (1, one)]
            for masters, cluster in order:
                rounds[masters].append(await run_round(cluster, side, f"b{r}m{masters}"))
    pairs = zip(rounds[1], rounds[3], strict=True)
    ratios = sorted(three.cpu_per_record_us[0] / one.cpu_per_record_us[0] for one, three in pairs)
    rows: list[dict[str, object]] = []
    for masters, results in rounds.items():
        per_master = [statistics.median(r.cpu_per_record_us[i] for r in results) for i in range(masters)]
        rows.append({
            "side": side.name, "masters": masters, "partitions": PARTITIONS, "records": N,
            "cpu_us_per_record_by_master": [round(x, 3) for x in per_master],
            "write_per_s": max(r.write_per_s for r in results),
            "read_per_s": max(r.read_per_s for r in results),
        })  # fmt: skip
    rows[1]["busiest_vs_single"] = round(statistics.median(ratios), 3)
    rows[1]["range"] = f"{ratios[0]:.3f}-{ratios[-1]:.3f}"
    rows[1]["target"] = 0.4
    return rows


async def wait_cost() -> list[dict[str, object]]:
    """Microseconds per pipeline with and without a trailing WAIT 1: blocks alternate, median of 5 each."""
    with EmbeddedCluster(EmbeddedClusterOptions(masters=1, replicas=1)) as cluster:
        client = connect(cluster.url, cluster=True)
        await client.initialize()
        stream = Keys("bw").partition("firehose_backfill", 0, 1)
        node = client.get_node_from_key(stream)
        sha = await client.script_load(XADD_BATCH)

        async def one(batch: int, wait: bool) -> None:
            async with client.pipeline(transaction=False) as pipe:
                if batch == 1:
                    pipe.xadd(stream, {"event": PAYLOAD})
                else:
                    pipe.execute_command("EVALSHA", sha, 1, stream, *([PAYLOAD] * batch))
                if wait:
                    pipe.execute_command("WAIT", 1, 1000, target_nodes=node)
                replies = await pipe.execute()
            assert not wait or replies[-1] == 1, replies

        rows: list[dict[str, object]] = []
        for batch in (1, BATCH):
            calls = WAIT_CALLS if batch == 1 else max(50, WAIT_CALLS // 20)
            blocks: dict[bool, list[float]] = {False: [], True: []}
            for block in range(10):
                wait = block % 2 == 1
                with Timer() as t:
                    for _ in range(calls):
                        await one(batch, wait)
                blocks[wait].append(t.seconds / calls * 1e6)
                await client.xtrim(stream, maxlen=0)
            plain, waited = statistics.median(blocks[False]), statistics.median(blocks[True])
            rows.append({"entries_per_call": batch, "us_per_call": plain, "us_per_call_with_wait": waited,
                         "wait_cost_us": waited - plain, "ratio": waited / plain})  # fmt: skip
        await client.aclose()
    return rows


async def main() -> None:
    rows = [row for side in SIDES for row in await compare(side)]
    report("cluster", rows)
    report("cluster_wait", await wait_cost())


if __name__ == "__main__":
    anyio.run(main)
