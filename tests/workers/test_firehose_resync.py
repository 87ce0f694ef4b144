"""Firehose resyncs (issue #10 §3): a `tooBig` commit and a commit whose `since` does not chain to the
last rev seen enqueue a RepoJob into repo_backfill, in the same atomic write as the batch that
carries the frame (its entries and the cursor past it); a chained commit does not.

The frames are real: commits signed by devnet's accounts, verified against devnet's PLC directory,
re-sequenced and served by devnet's relay over its websocket. Only what the scenario needs is
changed: a commit re-encoded as `tooBig` the way a PDS sends one (the commit block alone, no ops),
and a commit left out so that the next one's `since` does not chain.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import defaultdict
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from atp.car import read_car_bytes_raw, write_car
from atp.cbor import CID
from atp.frames import CommitFrame, decode_frame, encode_frame
from devnet import Devnet, DevnetConfig
from schemas import RecordCreate, RecordDelete, RecordUpdate, RepoJob, decode_entry
from streams import Keys, host_key
from tests._support import byte_fields, wait_until
from tests.workers._pipeline import cursor_at, ingester_config, read_all
from workers.ingester.firehose import FirehoseConverter
from workers.ingester.worker import build_ingester

pytestmark = pytest.mark.anyio


def commits_by_repo(net: Devnet) -> dict[str, list[CommitFrame]]:
    """devnet's commits so far, per repo, in order (each chained to the one before)."""
    out: dict[str, list[CommitFrame]] = defaultdict(list)
    for _seq, raw in net.world.firehose.after(0, limit=100_000):
        frame = decode_frame(raw)
        if isinstance(frame, CommitFrame):
            out[frame.repo].append(frame)
    return out


def _at_seq(frame: CommitFrame, seq: int) -> bytes:
    return encode_frame(dataclasses.replace(frame, seq=seq))


def too_big(frame: CommitFrame) -> CommitFrame:
    """`frame` as a PDS sends a commit over its limits: the signed commit block alone, no ops."""
    _, blocks = read_car_bytes_raw(frame.blocks)
    commit = CID.from_str(frame.commit)
    return dataclasses.replace(
        frame, too_big=True, ops=[], blocks=write_car([commit], [(commit, blocks[commit])]), prev_data=None
    )


class Monitor:
    """Every script call the server runs while open, with the commands it ran: its atomic steps."""

    _line = re.compile(r"^\S+ \[\d+ (\S+?)\] (.*)$", re.S)
    _arg = re.compile(r'"((?:[^"\\]|\\.)*)"')

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self.calls: list[list[list[str]]] = []  # per EVAL/EVALSHA: [its own args, *commands it ran]
        self.outside: list[list[str]] = []  # XADD/SET not run by a script

    async def saw_set(self, key: str, value: int) -> bool:
        return any(cmd[:3] == ["SET", key, str(value)] for call in self.calls for cmd in call[1:])

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async with self._redis.monitor() as monitor:
            task_status.started()
            assert monitor.connection is not None
            while True:
                raw = await monitor.connection.read_response()
                text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)
                m = self._line.match(text)
                if m is None:
                    continue
                client, args = m.group(1), self._arg.findall(m.group(2))
                if not args:
                    continue
                name = args[0].upper()
                if name in ("EVAL", "EVALSHA"):
                    self.calls.append([args])
                elif client == "lua" and self.calls:
                    self.calls[-1].append(args)
                elif name in ("XADD", "SET"):
                    self.outside.append(args)


async def test_too_big_and_gap_enqueue_a_resync_in_the_batch_write_and_chains_do_not(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    live, backfill = keys.stream("firehose_live"), keys.stream("repo_backfill")
    async with Devnet(DevnetConfig(repos=8, seed=31)) as net:
        net.step(240)
        commits = commits_by_repo(net)
        chained = sorted((c for c in commits.values() if len(c) >= 3), key=len, reverse=True)
        assert len(chained) >= 3, "devnet made too few commits for the scenario"
        a, b, c = chained[0][:3], chained[1][:3], chained[2][:3]
        assert a[1].since == a[0].rev and b[2].since == b[1].rev  # devnet's commits chain
        # A: two chained commits, then one too big. B: its 2nd commit never arrives (a rev gap).
        # C: three chained commits, none of which may trigger anything.
        scenario = [a[0], b[0], c[0], a[1], c[1], too_big(a[2]), b[2], c[2]]
        start = net.world.firehose.last_seq
        seqs = [net.world.firehose.append(functools.partial(_at_seq, f)) for f in scenario]
        last = seqs[-1]

        cursor_key = keys.cursor("firehose_live", host_key(net.relay_url))
        await redis_client.set(cursor_key, str(start))  # read only the scenario's frames
        config = ingester_config(
            redis_url, prefix, net.relay_url, mode="firehose", plc_url=net.plc_url, batch_size=3
        )
        monitor = Monitor(redis_client)
        async with anyio.create_task_group() as watch:
            await watch.start(monitor.run)
            async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
                [source] = ingester.firehoses
                tg.start_soon(source.run)
                await wait_until(
                    lambda: cursor_at(redis_client, cursor_key, last), timeout=30, what="caught up"
                )
                source.stop()
            # The monitor reads behind the server: wait until it has seen the last batch's write.
            await wait_until(lambda: monitor.saw_set(cursor_key, last), timeout=30, what="monitor caught up")
            watch.cancel_scope.cancel()

    jobs = await read_all(redis_client, backfill)
    assert all(isinstance(j, RepoJob) for j in jobs)
    assert [(j.did, j.rev, j.reason) for j in jobs] == [
        (a[2].repo, a[2].rev, "too-big"),
        (b[2].repo, b[2].rev, "gap"),
    ]
    assert all(j.host == host_key(net.relay_url) or j.host == net.relay_url for j in jobs)
    # The gapped commit's own ops still flow; the too-big one has none to send.
    events = [
        e
        for e in await read_all(redis_client, live)
        if isinstance(e, RecordCreate | RecordUpdate | RecordDelete)
    ]
    assert {(e.did, e.rev) for e in events} == {(f.repo, f.rev) for f in scenario if f.ops and not f.too_big}
    assert await redis_client.xlen(f"{live}:dlq") == 0

    # Atomicity: nothing wrote repo_backfill, firehose_live or the cursor outside a script call,
    # and each resync job was written by the same script call as the cursor past its frame (and,
    # for the gap, as the frame's own entries).
    assert not [w for w in monitor.outside if len(w) > 1 and w[1] in (live, backfill, cursor_key)]

    def seq_of(frame: CommitFrame) -> int:
        pairs = zip(seqs, scenario, strict=True)
        return next(seq for seq, f in pairs if (f.repo, f.rev) == (frame.repo, frame.rev))

    for job_frame, with_entries in ((a[2], False), (b[2], True)):
        [call] = [
            call
            for call in monitor.calls
            if any(cmd[:2] == ["XADD", backfill] and _has(cmd, job_frame.repo) for cmd in call[1:])
        ]
        sets = [int(cmd[2]) for cmd in call[1:] if cmd[:2] == ["SET", cursor_key]]
        assert sets and sets[-1] >= seq_of(job_frame)
        if with_entries:
            assert any(cmd[:2] == ["XADD", live] and _has(cmd, job_frame.rev) for cmd in call[1:])


def _has(command: list[str], text: str) -> bool:
    return any(text in arg for arg in command[2:])


async def test_a_too_big_commit_listing_ops_without_their_records_emits_no_recordless_events() -> None:
    """A tooBig commit may list its ops but leave their record blocks out: its deletes are
    events, its creates and updates are not (they come with the snapshot it enqueues), and no
    event ever carries `"record": null`."""
    async with Devnet(DevnetConfig(repos=12, seed=41)) as net:
        net.step(200)
        frames = [f for fs in commits_by_repo(net).values() for f in fs]
    frame = next(f for f in frames if {op.action for op in f.ops} >= {"create", "delete"})
    _, blocks = read_car_bytes_raw(frame.blocks)
    commit = CID.from_str(frame.commit)
    # The commit block alone, the ops kept: every record block is missing.
    bare = dataclasses.replace(frame, too_big=True, blocks=write_car([commit], [(commit, blocks[commit])]))
    converter = FirehoseConverter("relay.test", "firehose_live", "repo_backfill", identities=None)
    out = await converter.convert(encode_frame(bare))
    events = [decode_entry("firehose_live", byte_fields(fields)) for fields in out.entries]
    assert events and all(isinstance(e, RecordDelete) for e in events)
    assert len(events) == sum(op.action == "delete" for op in frame.ops)
    [(stream, job)] = out.extra
    assert stream == "repo_backfill" and decode_entry("repo_backfill", byte_fields(job)).reason == "too-big"
