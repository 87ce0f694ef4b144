"""Reading a repo with a small memory budget: blocks spill to a temporary file, records are equal."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from atp.blocks import BLOCK_OVERHEAD, BlockStore
from atp.cbor import cid_bytes_for
from atp.errors import MissingBlockError
from atp.repo import RepoReader

ReadRepo = Callable[..., Awaitable[RepoReader]]

pytestmark = pytest.mark.anyio


def _spill_files() -> set[str]:
    """The spill files this process holds open (fd and target: other tests' may come and go)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "streamfill-repo-" in target:
            out.add(f"{fd} {target}")
    return out


@pytest.mark.parametrize("name", ["repostream_little.car", "indigo_paul_staging.repo.car", "phpcar_repo.car"])
async def test_a_spilled_repo_reads_exactly_like_one_in_memory(
    atproto_data: Path, repo_from_bytes: ReadRepo, name: str
) -> None:
    data = (atproto_data / "car" / name).read_bytes()
    in_memory = await repo_from_bytes(data, chunk=4096)
    before = _spill_files()
    spilled = await repo_from_bytes(data, chunk=4096, memory_bytes=2048)
    assert isinstance(spilled.blocks, BlockStore) and spilled.blocks.spilled
    assert isinstance(in_memory.blocks, BlockStore) and not in_memory.blocks.spilled
    assert len(spilled.blocks) == len(in_memory.blocks)
    expected = [(r.key, r.cid, r.record) async for r in in_memory.records()]
    assert [(r.key, r.cid, r.record) async for r in spilled.records()] == expected
    ours = _spill_files() - before
    assert len(ours) == 1 and "(deleted)" in next(iter(ours))  # one file, already unlinked
    spilled.close()
    assert not ours & _spill_files()


async def test_a_partial_car_fails_the_same_way_when_spilled(
    atproto_data: Path, repo_from_bytes: ReadRepo
) -> None:
    data = (atproto_data / "car" / "indigo_repo_slice.car").read_bytes()
    reader = await repo_from_bytes(data, chunk=4096, memory_bytes=1024)
    with pytest.raises(MissingBlockError):
        _ = [r async for r in reader.records()]
    reader.close()


def test_block_store_keeps_the_first_copy_of_a_cid_and_answers_none_for_unknown_ones() -> None:
    store = BlockStore(memory_bytes=10)
    store.update([(b"a", b"0123456789ab")])
    assert store.spilled
    store.update([(b"b", b"xy"), (b"a", b"ignored"), (b"c", b"")])
    assert (store.get(b"a"), store.get(b"b"), store.get(b"c"), store.get(b"z")) == (
        b"0123456789ab",
        b"xy",
        b"",
        None,
    )
    assert len(store) == 3 and b"b" in store and store[b"b"] == b"xy"
    store.close()
    assert store.get(b"a") is None


def _tiny_blocks(start: int, count: int) -> tuple[list[bytes], list[bytes]]:
    datas = [b"\x1b" + i.to_bytes(8, "big") for i in range(start, start + count)]
    return [cid_bytes_for(d) for d in datas], datas


@pytest.mark.parametrize("count", [5_000, 21_846, 43_691, 100_000])
def test_block_overhead_covers_what_a_block_costs_in_memory(count: int) -> None:
    # The per-block constant of the budget, measured: CID key, bytes headers, dict slots, at the
    # dict's fullest and right after it grows (21,846 and 43,691 straddle resizes).
    cids, datas = _tiny_blocks(0, count)
    store = BlockStore(memory_bytes=1 << 40)
    tracemalloc.start()
    try:
        for i in range(0, count, 1000):
            # Slices of one buffer, as the CAR reader makes them: new objects, not the originals.
            buf = b"".join(c + d for c, d in zip(cids[i : i + 1000], datas[i : i + 1000], strict=True))
            chunk_cids = [buf[j : j + 36] for j in range(0, len(buf), 45)]
            chunk_datas = [buf[j + 36 : j + 45] for j in range(0, len(buf), 45)]
            store.add(chunk_cids, chunk_datas, sum(map(len, chunk_datas)))
            del buf, chunk_cids, chunk_datas
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_block = (used - sum(map(len, datas))) / count
    print(f"{count} blocks: {per_block:.0f} B of overhead per block, counted as {BLOCK_OVERHEAD}")
    assert per_block <= BLOCK_OVERHEAD
    assert store.memory_bytes == sum(map(len, datas)) + BLOCK_OVERHEAD * count
    store.close()


def test_tiny_blocks_spill_once_the_budget_is_used_and_memory_stays_within_it() -> None:
    budget = 2 * 1024 * 1024
    store = BlockStore(memory_bytes=budget)
    tracemalloc.start()
    try:
        peak_before = tracemalloc.get_traced_memory()[0]
        for start in range(0, 60_000, 1000):
            cids, datas = _tiny_blocks(start, 1000)
            store.add(cids, datas, sum(map(len, datas)))
            del cids, datas
        held = tracemalloc.get_traced_memory()[0] - peak_before
    finally:
        tracemalloc.stop()
    assert store.spilled and len(store) == 60_000
    assert store.memory_bytes <= budget
    # Python's view: the in-memory tier only (SQLite's page cache is allocated outside it).
    assert held <= budget, held
    cids, datas = _tiny_blocks(0, 60_000)
    assert [store.get(c) for c in cids[::997]] == datas[::997]
    assert store.get_many(cids[:5], 10) == datas[:1]  # a prefix within 10 bytes
    assert store.get_many(cids[-5:], 20) == datas[-5:-3]  # the same from disk
    assert store.get_many(cids[-2:], 1) == datas[-2:-1]  # at least one
    store.close()
