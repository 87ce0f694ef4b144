"""Followers never wedge (issue #13 items 4 and 5): the firehose cursor moves by plausible steps only.

devnet's relay serves the frames: real, signed commits, and hostile ones appended to its log the
way a broken or hostile relay proxy would send them — a commit re-sent with seq 10**12, an old
commit re-sent, a frame over the size limit — and a relay whose sequence resets (its log forgets
everything and numbers from 1 again: reconnecting with our cursor gets `FutureCursor`).
"""

from __future__ import annotations

import dataclasses

import anyio
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from atp.frames import CommitFrame, InfoFrame, decode_frame, encode_frame
from atp.subscribe import DEFAULT_MAX_FRAME_BYTES
from devnet import Devnet, DevnetConfig
from streams import Keys, host_key
from streams.admin import skip_ledgers
from tests._support import wait_until, xrange
from tests.workers._pipeline import ingester_config, read_all
from tests.workers.test_firehose import as_tuple, assert_same_events, expected_events
from workers.ingester.worker import build_ingester
from workers.status import render_status

pytestmark = pytest.mark.anyio

# The proxy saw 649 reconnects in 40 s; a follower that is not wedged needs a handful.
FEW_RECONNECTS = 10


async def cursor_is(redis: aioredis.Redis, key: str, seq: int) -> bool:
    value = await redis.get(key)
    return value is not None and int(value) == seq


def a_commit(net: Devnet) -> CommitFrame:
    for _seq, raw in net.world.firehose.after(0, limit=100_000):
        frame = decode_frame(raw)
        if isinstance(frame, CommitFrame) and frame.ops:
            return frame
    raise AssertionError("devnet made no commit")


async def dead_letters(redis: aioredis.Redis, keys: Keys) -> list[dict[str, str]]:
    rows = await xrange(redis, keys.dlq(keys.stream("firehose_live")))
    return [
        {k.decode(): v.decode("utf-8", "replace") for k, v in f.items() if k != b"frame"} for _, f in rows
    ]


async def test_a_far_future_or_stale_seq_is_dead_lettered_and_never_becomes_the_cursor(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=10, seed=51)) as net:
        config = ingester_config(
            redis_url, prefix, net.relay_url, mode="firehose", plc_url=net.plc_url, batch_size=5
        )
        cursor_key = keys.cursor("firehose_live", host_key(net.relay_url))
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            [source] = ingester.firehoses
            tg.start_soon(source.run)
            await wait_until(lambda: net.world.firehose.subscribers > 0, what="subscribed")
            net.step(20)
            commit = a_commit(net)
            # The proxy: one commit re-sent with seq 10**12; and an old one re-sent as it was.
            future = net.world.firehose.append(
                lambda _s: encode_frame(dataclasses.replace(commit, seq=10**12))
            )
            stale = net.world.firehose.append(lambda _s: encode_frame(commit))
            net.step(20)
            last = net.world.firehose.last_seq
            await wait_until(lambda: cursor_is(redis_client, cursor_key, last), timeout=30, what="caught up")
            source.stop()
        expected, _ = expected_events(net)
    hostile = {future, stale}
    got = [as_tuple(e) for e in await read_all(redis_client, keys.stream("firehose_live"))]
    assert_same_events(got, [e for e in expected if e[0] not in hostile], net)
    letters = await dead_letters(redis_client, keys)
    assert [(d["reason"], d["seq"]) for d in letters] == [
        ("implausible-seq", str(10**12)),
        ("stale-seq", str(commit.seq)),
    ]
    assert source.reconnects < FEW_RECONNECTS and source.refused == 2
    assert await redis_client.xlen(keys.gaps("firehose_live", host_key(net.relay_url))) == 0


async def test_a_relay_whose_sequence_resets_is_followed_from_its_head_with_the_gap_recorded(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=10, seed=52)) as net:
        config = ingester_config(
            redis_url, prefix, net.relay_url, mode="firehose", plc_url=net.plc_url, batch_size=5
        )
        host = host_key(net.relay_url)
        cursor_key = keys.cursor("firehose_live", host)
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            [source] = ingester.firehoses
            tg.start_soon(source.run)
            await wait_until(lambda: net.world.firehose.subscribers > 0, what="subscribed")
            net.step(40)
            before = net.world.firehose.last_seq
            await wait_until(
                lambda: cursor_is(redis_client, cursor_key, before), timeout=30, what="caught up"
            )
            old_events = len(await read_all(redis_client, keys.stream("firehose_live")))

            net.world.firehose.reset()  # the relay lost its state: it numbers from 1 again
            # Dropped (1), then FutureCursor at our cursor (2), then connected at the head.
            await wait_until(lambda: source.reconnects >= 2, what="FutureCursor seen")
            await wait_until(lambda: net.world.firehose.subscribers > 0, what="subscribed at the head")
            net.step(15)
            after = net.world.firehose.last_seq
            assert after < before
            await wait_until(lambda: cursor_is(redis_client, cursor_key, after), timeout=30, what="followed")
            source.stop()
        new_frames = net.world.firehose.after(0, limit=100_000)
        expected, _ = expected_events(net)
    got = [as_tuple(e) for e in await read_all(redis_client, keys.stream("firehose_live"))]
    assert got[old_events:] == expected  # every event of the new sequence, in order
    assert new_frames[0][0] == 1
    gaps = await xrange(redis_client, keys.gaps("firehose_live", host))
    assert [(f[b"after"], f[b"resumed_at"], f[b"reason"]) for _, f in gaps] == [
        (str(before).encode(), b"1", b"future-cursor")
    ]
    assert source.reconnects < FEW_RECONNECTS and source.gaps == 1
    assert await dead_letters(redis_client, keys) == []
    status = render_status([], await skip_ledgers(redis_client, keys))
    assert f"{keys.gaps('firehose_live', host)}  1 event-stream gap(s)" in status


async def test_an_oversize_frame_is_dead_lettered_with_its_seq_and_skipped(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=10, seed=53)) as net:
        config = ingester_config(
            redis_url, prefix, net.relay_url, mode="firehose", plc_url=net.plc_url, batch_size=5
        )
        cursor_key = keys.cursor("firehose_live", host_key(net.relay_url))
        await redis_client.set(cursor_key, "0")  # replay the log: the big frame is met at a replayed seq
        net.step(15)
        huge = net.world.firehose.append(lambda _s: b"\xa2" + b"\0" * (DEFAULT_MAX_FRAME_BYTES + 1024))
        net.step(15)
        junk = net.world.firehose.append(lambda _s: b"\xa2\x61")  # cut short: no seq to read
        net.step(5)
        last = net.world.firehose.last_seq
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            [source] = ingester.firehoses
            tg.start_soon(source.run)
            await wait_until(lambda: cursor_is(redis_client, cursor_key, last), timeout=30, what="caught up")
            source.stop()
        expected, _ = expected_events(net, skip=frozenset({huge, junk}))
    got = [as_tuple(e) for e in await read_all(redis_client, keys.stream("firehose_live"))]
    assert_same_events(got, expected, net)
    letters = await dead_letters(redis_client, keys)
    assert [(d["reason"], d["seq"], d.get("after_seq")) for d in letters] == [
        ("oversize-frame", str(huge), None),
        ("undecodable-frame", "", str(junk - 1)),
    ]
    assert "1009" in letters[0]["error"]
    assert source.reconnects < FEW_RECONNECTS


async def test_a_relay_that_closes_at_once_is_reconnected_to_with_a_growing_backoff(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """Each connection delivers one frame (an `#info`) and closes: no progress, so the backoff
    grows (0.2 s doubling, full jitter) instead of resetting to 50 ms after every frame."""
    connections = 0

    async def subscribe(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(encode_frame(InfoFrame("Hello", "and goodbye")))
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/xrpc/com.atproto.sync.subscribeRepos", subscribe)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        config = ingester_config(redis_url, prefix, f"http://127.0.0.1:{port}", mode="firehose")
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            [source] = ingester.firehoses
            tg.start_soon(source.run)
            await wait_until(lambda: connections >= 2, what="reconnected once")
            await anyio.sleep(3)  # the rate of reconnects is what is measured
            source.stop()
    finally:
        await runner.cleanup()
    # With the backoff reset after every frame: about 50 connections in 3 s; growing: about 5.
    assert 2 <= connections < 15, connections


async def test_an_outdated_cursor_accepts_the_replay_however_far_ahead_and_records_the_gap(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """The relay kept only its last 20 frames: our cursor is older, it says `OutdatedCursor` and
    replays from its oldest frame, a step beyond INGESTER_MAX_SEQ_STEP that is accepted this once."""
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=10, seed=54, event_log_size=20)) as net:
        net.step(80)
        oldest, last = net.world.firehose.oldest_seq, net.world.firehose.last_seq
        assert oldest > 5 + 10
        host = host_key(net.relay_url)
        cursor_key = keys.cursor("firehose_live", host)
        await redis_client.set(cursor_key, "5")
        config = ingester_config(
            redis_url, prefix, net.relay_url, mode="firehose", plc_url=net.plc_url, max_seq_step=10
        )
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            [source] = ingester.firehoses
            tg.start_soon(source.run)
            await wait_until(lambda: cursor_is(redis_client, cursor_key, last), timeout=30, what="caught up")
            source.stop()
        expected, _ = expected_events(net)
    got = [as_tuple(e) for e in await read_all(redis_client, keys.stream("firehose_live"))]
    assert_same_events(got, expected, net)  # the retained frames, every one
    gaps = await xrange(redis_client, keys.gaps("firehose_live", host))
    assert [(f[b"after"], f[b"resumed_at"], f[b"reason"]) for _, f in gaps] == [
        (b"5", str(oldest).encode(), b"outdated-cursor")
    ]
    assert await dead_letters(redis_client, keys) == []


async def test_a_relay_that_ignores_our_cursor_and_numbers_from_1_is_a_sequence_reset(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """A relay (or a proxy) that lost its state and answers any cursor with its own sequence from 1,
    without a `FutureCursor`: its first frames are stale and dead-lettered; the 20th in a row means a
    reset, and the follower resumes from the head with the gap recorded."""
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=10, seed=55)) as net:
        net.step(40)
        frames = [raw for _seq, raw in net.world.firehose.after(0, limit=100_000)]
        expected, _ = expected_events(net)
    connections = 0

    async def subscribe(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for raw in frames:  # seq 1, 2, ... whatever the cursor asked for
            await ws.send_bytes(raw)
        async for _ in ws:  # then idle until the client leaves
            pass
        return ws

    app = web.Application()
    app.router.add_get("/xrpc/com.atproto.sync.subscribeRepos", subscribe)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    relay = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    host = host_key(relay)
    cursor_key = keys.cursor("firehose_live", host)
    await redis_client.set(cursor_key, "1000")
    try:
        config = ingester_config(redis_url, prefix, relay, mode="firehose", verify_signatures=False)
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            [source] = ingester.firehoses
            tg.start_soon(source.run)
            await wait_until(lambda: cursor_is(redis_client, cursor_key, len(frames)), what="followed")
            source.stop()
    finally:
        await runner.cleanup()
    got = [as_tuple(e) for e in await read_all(redis_client, keys.stream("firehose_live"))]
    assert got == expected  # the whole new sequence, once, in order
    letters = await dead_letters(redis_client, keys)
    assert [(d["reason"], d["seq"]) for d in letters] == [("stale-seq", str(s)) for s in range(1, 20)]
    gaps = await xrange(redis_client, keys.gaps("firehose_live", host))
    assert [(f[b"after"], f[b"resumed_at"], f[b"reason"]) for _, f in gaps] == [(b"1000", b"1", b"seq-reset")]
    assert connections == 2
