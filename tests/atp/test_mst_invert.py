"""prevData (Sync 1.1): a commit's ops undone on its partial tree give back the previous root.

Checked against the interop commit-proof vectors, 148 real relay commits, random trees and ops,
and frames that lie: a wrong prevData, or a slice without a node the inversion needs.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from atp import mst
from atp.car import write_car
from atp.cbor import CID, cid_bytes_for, cid_str
from atp.commit import sign_commit
from atp.crypto import SigningKey
from atp.errors import CommitError, MissingBlockError
from atp.frames import CommitFrame, RepoOp, commit_ops, decode_frame
from atp.mstinvert import previous_root
from tests._hostile_repos import RECORD, RECORD_CID, keys_on_layer

Op = tuple[str, bytes | None, bytes | None]


def test_interop_commit_proofs_invert_to_the_root_before(atproto_data: Path) -> None:
    for case in json.loads((atproto_data / "interop/firehose/commit-proof-fixtures.json").read_text()):
        leaf = CID.from_str(case["leafValue"])
        after = (set(case["keys"]) | set(case["adds"])) - set(case["dels"])
        root, blocks = mst.build_raw((k, leaf) for k in after)
        proof = {cid: block for cid, block in blocks.items() if cid_str(cid) in set(case["blocksInProof"])}
        ops: list[Op] = [(k, leaf, None) for k in case["adds"]] + [(k, None, leaf) for k in case["dels"]]
        assert cid_str(previous_root(proof.get, root, ops)) == case["rootBeforeCommit"], case["comment"]


def _relay_commits(atproto_data: Path) -> list[CommitFrame]:
    data = (atproto_data / "firehose/jetstream_relay_frames.bin").read_bytes()
    frames, offset = [], 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "little")
        frame = decode_frame(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
        if isinstance(frame, CommitFrame):
            frames.append(frame)
    return frames


def test_real_relay_commits_follow_from_their_prev_data(atproto_data: Path) -> None:
    frames = _relay_commits(atproto_data)
    assert len(frames) == 148 and all(f.prev_data for f in frames)
    for frame in frames:
        commit_ops(frame)  # checks prevData
    other = frames[1].prev_data
    with pytest.raises(CommitError, match="prevData mismatch"):
        commit_ops(replace(frames[0], prev_data=other))


def _frame(ops: list[RepoOp], after: dict[bytes, bytes], root: bytes, prev_data: bytes,
           proof: set[bytes]) -> CommitFrame:  # fmt: skip
    key = SigningKey.generate(seed=b"invert")
    did = "did:plc:invertinvertinvertinvert"
    commit, commit_block = sign_commit(did, cid_str(root), rev="3kaaaaaaaaab2", signing_key=key)
    blocks = [
        (CID.from_str(commit), commit_block),
        *((c, after[c]) for c in sorted(proof)),
        (RECORD_CID, RECORD),
    ]
    return CommitFrame(seq=1, repo=did, rev="3kaaaaaaaaab2", since="3kaaaaaaaaaa2", commit=commit,
                       blocks=write_car([commit], blocks), ops=ops, time="2024-01-01T00:00:00.000Z",
                       prev_data=cid_str(prev_data))  # fmt: skip


def _needed(after: dict[bytes, bytes], root: bytes, ops: list[Op]) -> set[bytes]:
    read: set[bytes] = set()

    def get(cid: bytes) -> bytes | None:
        read.add(cid)
        return after.get(cid)

    previous_root(get, root, ops)
    return read


def test_a_frame_that_lies_about_prev_data_or_lacks_a_node_is_refused() -> None:
    before_keys = [k.decode() for k in keys_on_layer(0, 30, prefix="app.bsky.feed.like/p")]
    created = keys_on_layer(2, 1, prefix="app.bsky.feed.like/p")[0].decode()  # splits the tree
    before, _ = mst.build_raw((k, RECORD_CID) for k in before_keys)
    root, after = mst.build_raw((k, RECORD_CID) for k in [*before_keys, created])
    ops: list[Op] = [(created, RECORD_CID, None)]
    needed = _needed(after, root, ops)
    repo_ops = [RepoOp("create", created, cid_str(RECORD_CID))]
    assert len(commit_ops(_frame(repo_ops, after, root, before, needed))) == 1
    with pytest.raises(CommitError, match="prevData mismatch"):
        commit_ops(_frame(repo_ops, after, root, cid_bytes_for(b"another root"), needed))
    # The neighbours a created key's removal merges are part of the proof: without one, refused.
    for missing in needed - {root}:
        with pytest.raises(MissingBlockError):
            commit_ops(_frame(repo_ops, after, root, before, needed - {missing}))


def test_random_commits_invert_to_the_tree_before() -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    values = [cid_bytes_for(bytes([i])) for i in range(8)]
    for _ in range(40):
        state = {
            f"app.bsky.feed.like/{rng.randrange(10**6):06d}": rng.choice(values)
            for _ in range(rng.randrange(300))
        }
        before, _ = mst.build_raw(state.items())
        ops: list[Op] = []
        for _ in range(rng.randrange(1, 8)):
            key = rng.choice([*state, f"app.bsky.feed.post/{rng.randrange(10**6):06d}"]) if state else "a/b"
            old, new = state.get(key), rng.choice([None, *values])
            if (old is None and new is None) or any(key == k for k, _, _ in ops):
                continue
            ops.append((key, new, old))
            if new is None:
                del state[key]
            else:
                state[key] = new
        root, after = mst.build_raw(state.items())
        proof = {c: after[c] for c in _needed(after, root, ops)}
        assert previous_root(proof.get, root, ops) == before, f"seed {seed}: {ops}"
