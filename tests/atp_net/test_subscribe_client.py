"""atp.subscribe against the devnet firehose and labeler: decoding, verification, replay, drops."""

from __future__ import annotations

from contextlib import aclosing

import anyio
import httpx
import libipld
import pytest

from atp.car import read_car_bytes_raw
from atp.cbor import CID, encode
from atp.crypto import parse_did_key, verify
from atp.did import DidResolver
from atp.errors import UpstreamError
from atp.frames import (
    AccountFrame,
    CommitFrame,
    ErrorFrame,
    Frame,
    InfoFrame,
    LabelsFrame,
    SyncFrame,
    UnknownFrame,
    commit_ops,
    decode_frame,
)
from atp.repo import parse_commit
from atp.subscribe import SUBSCRIBE_LABELS, stream_url, subscribe
from devnet import Devnet, FaultConfig
from tests._support import wait_until
from tests.atp_net.conftest import StartNet

pytestmark = pytest.mark.anyio


async def _collect(url: str, cursor: int | None, until_seq: int, *, limit_s: float = 10.0) -> list[Frame]:
    """Frames from one connection until a frame with seq >= until_seq (or the stream drops)."""
    frames: list[Frame] = []
    with anyio.fail_after(limit_s):
        async with aclosing(subscribe(url, cursor=cursor)) as stream:
            async for raw in stream:
                frame = decode_frame(raw)
                frames.append(frame)
                if getattr(frame, "seq", 0) >= until_seq:
                    return frames
    return frames


def _seqs(frames: list[Frame]) -> list[int]:
    """Each frame's seq (every one of them a frame of the stream's sequence)."""
    seqs = []
    for frame in frames:
        assert not isinstance(frame, InfoFrame | ErrorFrame | UnknownFrame), frame
        seqs.append(frame.seq)
    return seqs


def _lookup(blocks: dict[bytes, bytes], root: bytes, key: bytes) -> bytes | None:
    """Search an MST using only `blocks` (a commit's CAR slice); KeyError if a needed node is absent."""
    node: bytes | None = root
    while node is not None:
        decoded = libipld.decode_dag_cbor(blocks[node])
        child, previous = decoded["l"], b""
        for entry in decoded["e"]:
            full = previous[: entry["p"]] + entry["k"]
            previous = full
            if full == key:
                value = entry["v"]
                assert isinstance(value, bytes)  # a CID's bytes
                return value
            if full > key:
                break
            child = entry["t"]
        node = child
    return None


def _check_proof(frame: CommitFrame) -> None:
    _, blocks = read_car_bytes_raw(frame.blocks)
    commit = parse_commit(CID.from_str(frame.commit), blocks[CID.from_str(frame.commit)])
    for op in frame.ops:
        found = _lookup(blocks, CID.from_str(commit.data), op.path.encode())
        assert found == (CID.from_str(op.cid) if op.cid else None), op


async def test_firehose_commits_verify_and_chain(start_net: StartNet) -> None:
    net: Devnet = await start_net(repos=30)
    revs = {a.did: a.rev for a in net.world.accounts}
    data = {a.did: str(CID(a.data_cid)) for a in net.world.accounts}
    kinds = net.step(120)
    frames = await _collect(net.relay_url, 0, net.world.firehose.last_seq)
    assert _seqs(frames) == list(range(1, net.world.firehose.last_seq + 1))
    keys = {}
    async with DidResolver(plc_url=net.plc_url) as resolver:
        for frame in frames:
            if isinstance(frame, CommitFrame):
                if frame.repo not in keys:
                    keys[frame.repo] = (await resolver.resolve(frame.repo)).signing_key
                ops = commit_ops(frame, signing_key=keys[frame.repo])
                assert ops and all(op.record is not None for op in ops if op.action != "delete")
                assert frame.since == revs[frame.repo] and frame.rev > frame.since
                assert frame.prev_data == data[frame.repo]
                _check_proof(frame)
                revs[frame.repo] = frame.rev
                data[frame.repo] = parse_commit(
                    CID.from_str(frame.commit),
                    read_car_bytes_raw(frame.blocks)[1][CID.from_str(frame.commit)],
                ).data
            elif isinstance(frame, SyncFrame):
                revs[frame.did] = frame.rev
                # The repo as a re-fetch right after the #sync gives it: the commit the frame carries.
                header, blocks = read_car_bytes_raw(frame.blocks)
                root = CID.from_str(header.roots[0])
                data[frame.did] = parse_commit(root, blocks[root]).data
    assert revs == {a.did: a.rev for a in net.world.accounts}
    assert kinds.count("commit") == sum(isinstance(f, CommitFrame) for f in frames)
    assert any(isinstance(f, AccountFrame) for f in frames)


async def test_cursor_replay_after_drops_has_no_gap_or_duplicate(start_net: StartNet) -> None:
    net: Devnet = await start_net(repos=20, faults=FaultConfig(drop_ws_every=7))
    net.step(40)
    last = net.world.firehose.last_seq  # label events go to the labeler, not the firehose
    seqs: list[int] = []
    drops = 0
    with anyio.fail_after(10):
        while not seqs or seqs[-1] < last:
            try:
                async with aclosing(subscribe(net.relay_url, cursor=seqs[-1] if seqs else 0)) as stream:
                    async for raw in stream:
                        seqs += _seqs([decode_frame(raw)])
                        if seqs[-1] == last:
                            break
            except UpstreamError:
                drops += 1
    assert seqs == list(range(1, last + 1))
    assert drops == (last - 1) // 7
    assert net.stats()["faults"]["ws_drop"] >= 5


async def test_live_frames_without_cursor(start_net: StartNet) -> None:
    net: Devnet = await start_net(repos=10)
    net.step(3)  # before we connect: not replayed without a cursor
    async with anyio.create_task_group() as tg:
        got: list[Frame] = []

        async def read() -> None:
            got.extend(await _collect(stream_url(net.relay_url), None, 8))

        tg.start_soon(read)
        await wait_until(lambda: net.world.firehose.subscribers == 1)
        net.step(5)
    assert _seqs(got) == [4, 5, 6, 7, 8]


async def test_outdated_cursor_gets_info_then_oldest(start_net: StartNet) -> None:
    net: Devnet = await start_net(repos=10, event_log_size=10)
    net.step(25)
    frames = await _collect(net.relay_url, 3, 25)
    assert isinstance(frames[0], InfoFrame) and frames[0].name == "OutdatedCursor"
    assert _seqs(frames[1:]) == list(range(16, 26))


async def test_future_cursor_is_an_error_frame(start_net: StartNet) -> None:
    net: Devnet = await start_net(repos=5)
    net.step(2)
    frames: list[Frame] = []
    with pytest.raises(UpstreamError):
        async with aclosing(subscribe(stream_url(net.relay_url), cursor=99)) as stream:
            async for raw in stream:
                frames.append(decode_frame(raw))  # noqa: PERF401 - keep frames read before the error
    assert frames == [ErrorFrame("FutureCursor", "Cursor in the future.")]


async def test_labeler_frames_decode_verify_and_match_truth(start_net: StartNet) -> None:
    net: Devnet = await start_net(repos=20, initial_labels=30)
    net.activity.labels(30)
    async with httpx.AsyncClient() as http:  # the labeler's document has no PDS: read it raw
        doc = (await http.get(f"{net.plc_url}/{net.labeler_did}")).json()
    key = parse_did_key(doc["verificationMethod"][0]["publicKeyMultibase"])
    frames = await _collect(stream_url(net.labeler_url, SUBSCRIBE_LABELS), 0, 60)
    live: dict[tuple[str, str], dict[str, object]] = {}
    for frame in frames:
        assert isinstance(frame, LabelsFrame)
        for label in frame.labels:
            unsigned = {k: v for k, v in label.items() if k != "sig"}
            verify(key, encode(unsigned), label["sig"])
            if label.get("neg"):
                live.pop((label["uri"], label["val"]), None)
            else:
                live[(label["uri"], label["val"])] = label
    expected = {(t["uri"], t["val"], t["cts"]) for t in net.truth() if t["type"] == "label"}
    unexpired = {(u, v, lb["cts"]) for (u, v), lb in live.items() if str(lb.get("exp", "9")) > "2030"}
    assert expected == unexpired and expected
