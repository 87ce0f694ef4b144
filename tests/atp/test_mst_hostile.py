"""Hostile MST shapes in correctly signed CARs: each is refused, after work bounded by the CAR.

The trees are built by hand (tests/_hostile_repos.py) so that framing, hashes and the commit signature
are all valid and only the structure breaks the repository spec's rules.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import libipld
import pytest

from atp import mst
from atp.cbor import CID, cid_bytes_for, encode
from atp.errors import MstError
from atp.mstwalk import MAX_NODE_ENTRIES, MstWalker
from atp.repo import RepoReader, read_repo
from tests._hostile_repos import RECORD, RECORD_CID, HostileRepo, dag_chain, keys_on_layer, node, signed

pytestmark = pytest.mark.anyio


async def _chunks(repo: HostileRepo) -> AsyncIterator[bytes]:
    for chunk in repo.chunks(4096):
        yield chunk


async def _read(repo: HostileRepo) -> RepoReader:
    return await read_repo(_chunks(repo), did=repo.did, signing_key=repo.key.public_key)


def _root(reader: RepoReader) -> bytes:
    return CID.from_str(reader.commit.data)


def _nodes_loaded_until_refused(reader: RepoReader) -> int:
    walker = MstWalker(reader.blocks.get, _root(reader))
    try:
        while walker.step([], [], 256):
            pass
    except MstError:
        return walker.nodes
    raise AssertionError("the walk was not refused")


def _with(name: str, root: tuple[bytes, bytes], *nodes: tuple[bytes, bytes]) -> HostileRepo:
    return signed(name, root[0], [root, *nodes, (RECORD_CID, RECORD)])


async def test_the_issues_dag_is_refused_after_a_handful_of_node_loads() -> None:
    # 600 root entries all pointing at one chain of 50,000 entry-less nodes: 30 million node
    # loads for a walk that does not check the tree (97 s of CPU in the issue).
    repo = dag_chain("dag", fanout=600, chain=50_000)
    reader = await _read(repo)
    with pytest.raises(MstError):
        _ = [r async for r in reader.records()]
    assert _nodes_loaded_until_refused(reader) <= 3


async def test_a_node_reached_twice_is_refused() -> None:
    top = keys_on_layer(1, 2, prefix="app.bsky.feed.like/m")
    low = [k for k in keys_on_layer(0, 40, prefix="app.bsky.feed.like/m") if top[0] < k < top[1]][:3]
    leaf = node([(k, RECORD_CID, None) for k in low])
    # Both entries' right subtrees are the same leaf (a DAG, each part of it well-formed).
    root = node([(top[0], RECORD_CID, leaf[0]), (top[1], RECORD_CID, leaf[0])])
    reader = await _read(_with("twice", root, leaf))
    with pytest.raises(MstError, match=r"out of order|twice"):
        _ = [r async for r in reader.records()]
    assert _nodes_loaded_until_refused(reader) == 3  # root, the leaf, the leaf again: refused


async def test_a_chain_of_empty_nodes_deeper_than_the_layers_is_refused() -> None:
    top = keys_on_layer(2, 1, prefix="app.bsky.feed.like/e")
    # Layer 2 -> an entry-less layer-1 node -> another entry-less node where layer 0 must be.
    bottom = node([])
    middle = node([], left=bottom[0])
    root = node([(top[0], RECORD_CID, None)], left=middle[0])
    with pytest.raises(MstError, match="empty"):
        _ = [r async for r in (await _read(_with("chain", root, middle, bottom))).records()]


async def test_a_key_on_the_wrong_layer_is_refused() -> None:
    top = keys_on_layer(1, 1, prefix="app.bsky.feed.like/w")[0]
    stray = next(k for k in keys_on_layer(1, 50, prefix="app.bsky.feed.like/v") if k < top)
    zero = next(k for k in keys_on_layer(0, 50, prefix="app.bsky.feed.like/v") if k < stray)
    leaf = node([(zero, RECORD_CID, None), (stray, RECORD_CID, None)])  # a layer-1 key in a layer-0 node
    root = node([(top, RECORD_CID, None)], left=leaf[0])
    with pytest.raises(MstError, match="on layer 0 but holds"):
        _ = [r async for r in (await _read(_with("layer", root, leaf))).records()]


async def test_a_root_on_a_lower_layer_than_a_key_below_it_is_refused() -> None:
    zero = keys_on_layer(0, 2, prefix="app.bsky.feed.like/r")
    one = next(k for k in keys_on_layer(1, 50, prefix="app.bsky.feed.like/q") if k < zero[0])
    leaf = node([(one, RECORD_CID, None)])
    root = node([(k, RECORD_CID, None) for k in zero], left=leaf[0])  # layer-0 root with a subtree
    with pytest.raises(MstError, match="layer 0 has subtrees"):
        _ = [r async for r in (await _read(_with("low-root", root, leaf))).records()]


async def test_keys_out_of_order_across_subtrees_are_refused() -> None:
    top = keys_on_layer(1, 1, prefix="app.bsky.feed.like/o")[0]
    above = [k for k in keys_on_layer(0, 60, prefix="app.bsky.feed.like/o") if k > top][:2]
    leaf = node([(k, RECORD_CID, None) for k in above])  # keys after `top`, in its left subtree
    root = node([(top, RECORD_CID, None)], left=leaf[0])
    with pytest.raises(MstError, match="out of order"):
        _ = [r async for r in (await _read(_with("order", root, leaf))).records()]


async def test_an_empty_leaf_and_an_empty_root_pointing_down_are_refused() -> None:
    top = keys_on_layer(1, 1, prefix="app.bsky.feed.like/z")[0]
    empty = node([])
    root = node([(top, RECORD_CID, empty[0])])
    with pytest.raises(MstError, match="empty"):
        _ = [r async for r in (await _read(_with("empty-leaf", root, empty))).records()]
    leaf = node([(k, RECORD_CID, None) for k in keys_on_layer(0, 2, prefix="app.bsky.feed.like/y")])
    hollow = node([], left=leaf[0])
    with pytest.raises(MstError, match="empty node pointing to a subtree"):
        _ = [r async for r in (await _read(_with("hollow-root", hollow, leaf))).records()]


async def test_oversized_nodes_and_keys_are_refused() -> None:
    many = keys_on_layer(0, MAX_NODE_ENTRIES + 1, prefix="app.bsky.feed.like/n")
    root = node([(k, RECORD_CID, None) for k in many])
    with pytest.raises(MstError, match="entries"):
        _ = [r async for r in (await _read(_with("wide", root))).records()]
    long_key = b"app.bsky.feed.like/" + b"x" * 2000
    root = node([(long_key, RECORD_CID, None)])
    with pytest.raises(MstError, match="malformed"):
        _ = [r async for r in (await _read(_with("long", root))).records()]


async def test_keys_that_are_not_record_paths_are_refused() -> None:
    for i, bad in enumerate([b"no-slash", b"a/b/c", b"/rkey", b"app.bsky.feed.like/\xff"]):
        root = node([(bad, RECORD_CID, None)])
        with pytest.raises(MstError, match=r"record path|not UTF-8"):
            _ = [r async for r in (await _read(_with(f"path{i}", root))).records()]
    # A record key outside the syntax is the backfiller's to dead-letter, record by record.
    root = node([(b"app.bsky.feed.like/a b", RECORD_CID, None)])
    records = [r async for r in (await _read(_with("odd-rkey", root))).records()]
    assert [(r.collection, r.rkey) for r in records] == [("app.bsky.feed.like", "a b")]


def test_interop_trees_walk_under_the_checks(atproto_data: Path) -> None:
    # The commit-proof vectors' trees (layers up to 2, entry-less intermediate nodes included).
    for case in json.loads((atproto_data / "interop/firehose/commit-proof-fixtures.json").read_text()):
        keys = (set(case["keys"]) | set(case["adds"])) - set(case["dels"])
        root, blocks = mst.build([(k, case["leafValue"]) for k in keys])
        assert [k for k, _ in mst.walk(blocks.__getitem__, root)] == sorted(keys), case["comment"]


def _relink(blocks: dict[bytes, bytes], root: bytes, rng: random.Random) -> bytes | None:
    """Point one random subtree link at another leaf of the tree, re-encoding up to a new root.

    The leaf stays linked from its own parent too, so the damaged tree reaches it twice.
    """
    decoded = {cid: libipld.decode_dag_cbor(block) for cid, block in blocks.items()}
    slots = [(cid, i) for cid, n in decoded.items() for i, e in enumerate(n["e"]) if e["t"]]
    slots += [(cid, -1) for cid, n in decoded.items() if n["l"]]
    leaves = [cid for cid, n in decoded.items() if not n["l"] and not any(e["t"] for e in n["e"])]
    if not slots or len(leaves) < 2:
        return None
    victim, slot = rng.choice(slots)
    current = decoded[victim]["l"] if slot < 0 else decoded[victim]["e"][slot]["t"]
    target = rng.choice([leaf for leaf in leaves if leaf != current])
    memo: dict[bytes, bytes] = {}

    def rebuild(cid: bytes) -> bytes:
        if cid not in memo:
            n = decoded[cid]
            left = rebuild(n["l"]) if n["l"] else None
            entries = [{**e, "v": CID(e["v"]), "t": CID(rebuild(e["t"])) if e["t"] else None} for e in n["e"]]
            if cid == victim and slot < 0:
                left = target
            elif cid == victim:
                entries[slot]["t"] = CID(target)
            block = encode({"e": entries, "l": CID(left) if left else None})
            memo[cid] = cid_bytes_for(block)
            blocks[memo[cid]] = block
        return memo[cid]

    return rebuild(root)


def test_random_trees_walk_and_random_relinks_are_refused() -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(30):
        count = rng.randrange(1, 600)
        keys = sorted({f"app.bsky.feed.like/{rng.randrange(10**9):09d}" for _ in range(count)})
        root, blocks = mst.build_raw((k, RECORD_CID) for k in keys)
        assert [k for k, _ in mst.walk_raw(blocks.get, root)] == keys, f"seed {seed}"
        damaged = _relink(blocks, root, rng)
        if damaged is not None:
            with pytest.raises(MstError):
                list(mst.walk_raw(blocks.get, damaged))
                pytest.fail(f"a tree reaching a node twice was accepted (seed {seed})")
