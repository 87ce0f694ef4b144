"""Ingester firehose and labeler modes against devnet: exact events in order, resume without gaps."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from atp.frames import AccountFrame, CommitFrame, IdentityFrame, SyncFrame, decode_frame
from devnet import Devnet, DevnetConfig, FaultConfig
from schemas import Account, Identity, RecordCreate, RecordDelete, RecordUpdate
from streams import Keys, host_key
from tests._support import wait_until, xrange
from tests.workers._pipeline import cursor_at, ingester_config, read_all
from workers.ingester.worker import build_ingester

pytestmark = pytest.mark.anyio


def expected_events(
    net: Devnet, skip: frozenset[int] = frozenset()
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """What devnet emitted, as (seq, did, kind, path) tuples in order, and the DIDs of #sync frames
    (the frames at the seqs in `skip` left out)."""
    out: list[tuple[Any, ...]] = []
    synced: list[str] = []
    for seq, raw in net.world.firehose.after(0, limit=100_000):
        if seq in skip:
            continue
        frame = decode_frame(raw)
        if isinstance(frame, CommitFrame):
            out += [(seq, frame.repo, op.action, op.path, op.cid) for op in frame.ops]
        elif isinstance(frame, IdentityFrame):
            out.append((seq, frame.did, "identity", "", None))
        elif isinstance(frame, AccountFrame):
            out.append((seq, frame.did, "account", frame.status or "active", None))
        elif isinstance(frame, SyncFrame):
            synced.append(frame.did)
    return out, synced


def _inactive(event: tuple[Any, ...]) -> bool:
    return bool(event[2] == "account" and event[3] != "active")


def assert_same_events(got: list[tuple[Any, ...]], expected: list[tuple[Any, ...]], net: Devnet) -> None:
    """Every event exactly once, in relay order. An `#account` saying a repo went inactive is
    confirmed at the DID's PDS when it is read: it may be dropped (the PDS said active by then:
    the event was stale, or since reversed), and the last status applied per account is its
    status now."""
    assert [e for e in got if not _inactive(e)] == [e for e in expected if not _inactive(e)]
    kept = [e for e in got if _inactive(e)]
    assert set(kept) <= {e for e in expected if _inactive(e)} and kept == sorted(kept)
    last = {e[1]: e[3] for e in got if e[2] == "account"}
    assert last == {did: net.world.by_did[did].status for did in last}


def as_tuple(e: Any) -> tuple[Any, ...]:
    if isinstance(e, RecordCreate | RecordUpdate):
        return (
            e.seq,
            e.did,
            "create" if isinstance(e, RecordCreate) else "update",
            f"{e.collection}/{e.rkey}",
            e.cid,
        )
    if isinstance(e, RecordDelete):
        return (e.seq, e.did, "delete", f"{e.collection}/{e.rkey}", None)
    if isinstance(e, Identity):
        return (e.seq, e.did, "identity", "", None)
    assert isinstance(e, Account)
    return (e.seq, e.did, "account", e.status or "active", None)


async def test_firehose_events_match_devnet_in_order_across_dropped_connections(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=25, seed=21, faults=FaultConfig(drop_ws_every=9))) as net:
        config = ingester_config(
            redis_url, prefix, net.relay_url, mode="firehose", plc_url=net.plc_url, batch_size=10
        )
        cursor_key = keys.cursor("firehose_live", host_key(net.relay_url))
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            [source] = ingester.firehoses
            tg.start_soon(source.run)
            await wait_until(lambda: net.world.firehose.subscribers > 0, what="subscribed")
            net.step(150)
            last = net.world.firehose.last_seq
            await wait_until(lambda: cursor_at(redis_client, cursor_key, last), timeout=30, what="caught up")
            source.stop()
        expected, synced = expected_events(net)
    got = [as_tuple(e) for e in await read_all(redis_client, keys.stream("firehose_live"))]
    assert_same_events(got, expected, net)  # every op once, in relay order: no gap, no duplicate
    assert source.reconnects >= 3  # the devnet dropped us every 9 frames
    jobs = await read_all(redis_client, keys.stream("repo_backfill"))
    assert sorted(j.did for j in jobs if j.reason == "sync") == sorted(synced)
    assert await redis_client.xlen(keys.stream("firehose_live:dlq")) == 0


async def test_bad_signature_frame_is_dead_lettered_and_the_rest_flows(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=10, seed=22)) as net:
        config = ingester_config(redis_url, prefix, net.relay_url, mode="firehose", plc_url=net.plc_url)
        cursor_key = keys.cursor("firehose_live", host_key(net.relay_url))
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            tg.start_soon(ingester.firehoses[0].run)
            await wait_until(lambda: net.world.firehose.subscribers > 0, what="subscribed")
            net.step(20)
            # A relay that forwards a commit signed with the wrong key: rotate one repo's key at PLC.
            victim = net.world.accounts[0]
            victim_key, victim.key = victim.key, net.world.accounts[1].key
            await _step_commit_for(net, victim.did)
            victim.key = victim_key
            net.step(20)
            last = net.world.firehose.last_seq
            await wait_until(lambda: cursor_at(redis_client, cursor_key, last), timeout=30, what="caught up")
            ingester.firehoses[0].stop()
    dlq = await xrange(redis_client, keys.stream("firehose_live:dlq"))
    assert len(dlq) >= 1
    fields = dlq[0][1]
    assert fields[b"reason"] == b"unverifiable-commit" and b"Signature" in fields[b"error"]
    frame = decode_frame(fields[b"frame"])
    assert isinstance(frame, CommitFrame) and frame.repo == victim.did


async def test_labels_are_ingested_with_cursor(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=10, seed=23, initial_labels=15)) as net:
        config = ingester_config(
            redis_url, prefix, net.relay_url, mode="labeler", relay_hosts=(), labeler_hosts=(net.labeler_url,)
        )
        cursor_key = keys.cursor("label_live", host_key(net.labeler_url))
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            tg.start_soon(ingester.labelers[0].run)
            last = net.world.labels.last_seq
            await wait_until(
                lambda: cursor_at(redis_client, cursor_key, last), timeout=30, what="labels caught up"
            )
            ingester.labelers[0].stop()
    batches = await read_all(redis_client, keys.stream("label_live"))
    assert [b.seq for b in batches] == list(range(1, last + 1))
    assert all(lbl.src for b in batches for lbl in b.labels)


async def _step_commit_for(net: Devnet, did: str) -> None:
    """Step activity until a commit of `did` was emitted."""
    for _ in range(500):
        before = net.world.firehose.last_seq
        net.step(1)
        for _seq, raw in net.world.firehose.after(before):
            frame = decode_frame(raw)
            if isinstance(frame, CommitFrame) and frame.repo == did:
                return
    raise AssertionError(f"no commit for {did} in 500 steps")


async def test_unreachable_plc_stalls_without_dead_letters_then_catches_up(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=10, seed=24)) as net:
        cursor_key = keys.cursor("firehose_live", host_key(net.relay_url))
        await redis_client.set(cursor_key, "0")  # replay the relay's log from its start
        net.step(30)
        # Nothing listens on port 9 of loopback: every DID resolution fails, transiently.
        down = ingester_config(
            redis_url, prefix, net.relay_url, mode="firehose", plc_url="http://127.0.0.1:9"
        )
        async with build_ingester(redis_client, down) as ingester, anyio.create_task_group() as tg:
            source = ingester.firehoses[0]
            tg.start_soon(source.run)
            await wait_until(lambda: source.reconnects >= 2, what="retried with the PLC down")
            source.stop()
        assert await redis_client.xlen(keys.stream("firehose_live:dlq")) == 0  # an outage is not bad input
        assert int(await redis_client.get(cursor_key) or 0) < net.world.firehose.last_seq

        up = ingester_config(redis_url, prefix, net.relay_url, mode="firehose", plc_url=net.plc_url)
        async with build_ingester(redis_client, up) as ingester, anyio.create_task_group() as tg:
            source = ingester.firehoses[0]
            tg.start_soon(source.run)
            last = net.world.firehose.last_seq
            await wait_until(lambda: cursor_at(redis_client, cursor_key, last), timeout=30, what="caught up")
            source.stop()
        expected, _ = expected_events(net)
    got = [as_tuple(e) for e in await read_all(redis_client, keys.stream("firehose_live"))]
    assert_same_events(got, expected, net)
    assert await redis_client.xlen(keys.stream("firehose_live:dlq")) == 0
