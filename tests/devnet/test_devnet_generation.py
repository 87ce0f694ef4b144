"""Devnet generation: determinism, realistic sizes and record bodies, linear work.

How fast generation is, is measured by bench/bench_devnet.py, not asserted here."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

import libipld
import pytest

from atp import mst
from atp.cbor import cid_str
from devnet import repos
from devnet.activity import Activity
from devnet.config import DevnetConfig, FaultConfig
from devnet.generate import generate_world
from devnet.records import COLLECTIONS
from devnet.state import World
from devnet.truth import truth_lines


def _fingerprint(world: World) -> list[object]:
    heads = [(a.did, a.handle, a.pds, a.head, a.rev, a.key.did_key()) for a in world.accounts]
    return [heads, truth_lines(world)]


def test_same_seed_same_network() -> None:
    config = DevnetConfig(repos=40, seed=9, faults=FaultConfig(takendown=2, missing=1))
    assert _fingerprint(generate_world(config)) == _fingerprint(generate_world(config))


def test_other_seed_other_network() -> None:
    one = generate_world(DevnetConfig(repos=10, seed=1))
    two = generate_world(DevnetConfig(repos=10, seed=2))
    assert not set(one.all_dids) & set(two.all_dids)


def test_same_seed_same_live_events() -> None:
    config = DevnetConfig(repos=25, seed=4)
    frames = []
    for _ in range(2):
        world = generate_world(config)
        activity = Activity(world, config)
        for _ in range(80):
            activity.step()
        frames.append([frame for _, frame in world.firehose.after(0)] + [f for _, f in world.labels.after(0)])
    assert frames[0] == frames[1] and len(frames[0]) == 80


def test_records_are_realistic() -> None:
    world = generate_world(DevnetConfig(repos=60, seed=3))
    collections = {path.split("/")[0] for a in world.accounts for path in a.records}
    assert collections <= set(COLLECTIONS) and {"app.bsky.feed.post", "app.bsky.feed.like"} <= collections
    post_cids = {cid for _, cid in world.post_refs}
    for account in world.accounts:
        assert not account.records or "app.bsky.actor.profile/self" in account.records
        for path, ref in account.records.items():
            record = world_record(world, ref.cid)
            assert record["$type"] == path.split("/")[0] and record["createdAt"].endswith("Z")
            if record["$type"] in ("app.bsky.feed.like", "app.bsky.feed.repost"):
                assert record["subject"]["cid"] in post_cids
            if record["$type"] == "app.bsky.graph.follow":
                assert record["subject"] in world.by_did


def world_record(world: World, cid: bytes) -> dict[str, Any]:
    assert cid_str(cid).startswith("bafyrei")
    record: dict[str, Any] = libipld.decode_dag_cbor(world.blocks[cid])
    return record


def test_sizes_are_heavy_tailed_and_generation_does_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    # Generation must stay fast at the demo's size (500 repos, ~114k records). How fast is measured
    # by bench/bench_devnet.py, not here; what keeps it fast is that the work is linear in the
    # records: each repo's MST is built once and its commit signed once (a build per record, as a
    # naive generator would do, is quadratic: the 100k-record repo alone would take hours), and
    # no block is written that the network does not serve.
    builds: list[int] = []
    signs: list[str] = []
    real_build, real_sign = mst.build_raw, repos.sign_commit  # devnet.repos imports build_raw

    def build_raw(items: Iterable[tuple[str, bytes]]) -> Any:
        items = list(items)
        builds.append(len(items))
        return real_build(items)

    def sign_commit(did: str, *args: Any, **kwargs: Any) -> bytes:
        signs.append(did)
        return real_sign(did, *args, **kwargs)

    monkeypatch.setattr(repos, "build_raw", build_raw)
    monkeypatch.setattr(repos, "sign_commit", sign_commit)
    world = generate_world(DevnetConfig(repos=500, seed=1))
    sizes = sorted(len(a.records) for a in world.accounts)
    assert sizes[-1] >= 100_000
    assert statistics.median(sizes) < 50 and sizes[-2] >= 100  # a tail below the huge repo
    assert sorted(builds) == sizes  # one MST build per repo, over exactly its records
    assert sorted(signs) == sorted(a.did for a in world.accounts)  # one signed commit per repo
    served = {ref.cid for a in world.accounts for ref in a.records.values()}
    assert set(world.blocks) == served  # record blocks: only those some repo holds
    nodes = sum(len(a.tree) for a in world.accounts)
    assert nodes < sum(sizes) // 2  # MST nodes: a fraction of the records (fanout ~4), no leftovers


def test_huge_repo_is_left_out_of_live_activity() -> None:
    config = DevnetConfig(repos=12, seed=2, huge_repo_records=8000, live_max_records=5000)
    world = generate_world(config)
    huge = world.accounts[1]
    rev = huge.rev
    activity = Activity(world, config)
    for _ in range(200):
        activity.step()
    assert len(huge.records) == 8000 and huge.rev == rev
