"""Reading a repo with a small memory budget: blocks spill to a temporary file, records are equal."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from atp.blocks import BlockStore
from atp.errors import MissingBlockError
from atp.repo import RepoReader

ReadRepo = Callable[..., Awaitable[RepoReader]]

pytestmark = pytest.mark.anyio


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("name", ["repostream_little.car", "indigo_paul_staging.repo.car", "phpcar_repo.car"])
async def test_a_spilled_repo_reads_exactly_like_one_in_memory(
    atproto_data: Path, repo_from_bytes: ReadRepo, name: str
) -> None:
    data = (atproto_data / "car" / name).read_bytes()
    in_memory = await repo_from_bytes(data, chunk=4096)
    fds = _open_fds()
    spilled = await repo_from_bytes(data, chunk=4096, memory_bytes=2048)
    assert isinstance(spilled.blocks, BlockStore) and spilled.blocks.spilled
    assert isinstance(in_memory.blocks, BlockStore) and not in_memory.blocks.spilled
    assert len(spilled.blocks) == len(in_memory.blocks)
    expected = [(r.key, r.cid, r.record) async for r in in_memory.records()]
    assert [(r.key, r.cid, r.record) async for r in spilled.records()] == expected
    assert _open_fds() == fds + 1
    spilled.close()
    assert _open_fds() == fds


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
