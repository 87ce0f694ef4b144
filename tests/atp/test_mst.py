"""MST: key heights and tree layout against the interop vectors; walk errors on malformed trees."""

from __future__ import annotations

import json
from pathlib import Path

import libipld
import pytest

from atp import mst
from atp.cbor import CID, cid_for, cid_str, encode
from atp.errors import MissingBlockError, MstError


def test_key_heights(atproto_data: Path) -> None:
    for case in json.loads((atproto_data / "interop/mst/key_heights.json").read_text()):
        assert mst.key_height(case["key"]) == case["height"], case


def test_example_keys_heights(atproto_data: Path) -> None:
    keys = [k for k in (atproto_data / "interop/mst/example_keys.txt").read_text().split() if k]
    assert len(keys) > 50
    for key in keys:
        assert mst.key_height(key) == int(key.split("/")[0][1:]), key


@pytest.mark.parametrize("index", range(6))
def test_commit_proof_roots_and_blocks(atproto_data: Path, index: int) -> None:
    case = json.loads((atproto_data / "interop/firehose/commit-proof-fixtures.json").read_text())[index]
    leaf = case["leafValue"]
    before, _ = mst.build([(k, leaf) for k in case["keys"]])
    assert before == case["rootBeforeCommit"], case["comment"]
    after_keys = (set(case["keys"]) | set(case["adds"])) - set(case["dels"])
    after, blocks = mst.build([(k, leaf) for k in after_keys])
    assert after == case["rootAfterCommit"], case["comment"]
    assert set(case["blocksInProof"]) <= set(blocks) | {leaf}
    assert [k for k, _ in mst.walk(blocks.__getitem__, after)] == sorted(after_keys)


def test_nodes_are_canonical_dag_cbor() -> None:
    leaf = cid_for(b"leaf")
    root, blocks = mst.build([(f"app.bsky.feed.post/{i:06d}", leaf) for i in range(3000)])
    for cid, data in blocks.items():
        assert libipld.encode_dag_cbor(libipld.decode_dag_cbor(data)) == data
        assert cid_for(data) == cid
    walked = list(mst.walk(blocks.__getitem__, root))
    assert [k for k, _ in walked] == [f"app.bsky.feed.post/{i:06d}" for i in range(3000)]
    assert all(v == leaf for _, v in walked)


def test_empty_tree() -> None:
    root, blocks = mst.build([])
    assert libipld.decode_dag_cbor(blocks[root]) == {"e": [], "l": None}
    assert list(mst.walk(blocks.__getitem__, root)) == []


def _node(entries: list[dict[str, object]], left: bytes | None = None) -> tuple[str, dict[str, bytes]]:
    data = encode({"e": entries, "l": CID(left) if left else None})
    return cid_for(data), {cid_for(data): data}


def test_walk_refuses_keys_out_of_order() -> None:
    leaf = CID.from_str(cid_for(b"x"))
    root, blocks = _node(
        [{"p": 0, "k": b"b/2", "v": leaf, "t": None}, {"p": 0, "k": b"a/1", "v": leaf, "t": None}]
    )
    with pytest.raises(MstError, match="out of order"):
        list(mst.walk(blocks.__getitem__, root))


def test_walk_refuses_bad_prefix() -> None:
    leaf = CID.from_str(cid_for(b"x"))
    root, blocks = _node([{"p": 5, "k": b"a/1", "v": leaf, "t": None}])
    with pytest.raises(MstError):
        list(mst.walk(blocks.__getitem__, root))


def test_walk_reports_missing_subtree() -> None:
    missing = CID.from_str(cid_for(b"absent"))
    key = next(k for k in (f"a/{i}".encode() for i in range(100)) if mst.key_height(k) == 1)
    root, blocks = _node([{"p": 0, "k": key, "v": CID.from_str(cid_for(b"x")), "t": None}], left=missing)
    with pytest.raises(MissingBlockError) as info:
        list(mst.walk(blocks.__getitem__, root))
    assert info.value.cid == cid_str(missing)


def test_duplicate_keys_refused() -> None:
    with pytest.raises(MstError):
        mst.build([("a/1", cid_for(b"1")), ("a/1", cid_for(b"2"))])
