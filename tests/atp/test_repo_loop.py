"""Reading a large repo never holds the event loop: a concurrent task keeps its pace throughout.

The hold is measured in CPU time of the loop's thread between two turns of a concurrent task, so
that a loaded machine (this process descheduled for a while) cannot make it look longer than the
work the reader did without yielding.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from atp.repo import read_repo
from tests._hostile_repos import tiny_blocks

pytestmark = pytest.mark.anyio

# The CPU time the loop may be held for at most. Lease renewal runs every min_idle/3 (20 s by
# default): this is a tiny fraction of it, and of the whole read (seconds of CPU here).
MAX_HOLD_S = 0.1


async def _eager(chunks: list[bytes]) -> AsyncIterator[bytes]:
    """A source whose data is all buffered: it never suspends, so only the reader can yield."""
    for chunk in chunks:
        yield chunk


async def test_a_large_repo_is_read_without_holding_the_event_loop() -> None:
    # 30,000 records to walk and decode, and 200,000 more blocks that spill to SQLite.
    repo = tiny_blocks("loop", 200_000, records=30_000)
    chunks = list(repo.chunks())
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.thread_time()
        while not done.is_set():
            await anyio.sleep(0.005)
            now = time.thread_time()
            gaps.append(now - last)
            last = now

    started = time.thread_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.lowlevel.checkpoint()  # the ticker starts first
        reader = await read_repo(_eager(chunks), did=repo.did, signing_key=repo.key.public_key,
                                 memory_bytes=4 * 1024 * 1024)  # fmt: skip
        count = sum([len(part.records) async for part in reader.slices()])
        reader.close()
        done.set()
    took = time.thread_time() - started
    print(f"read {count} records in {took:.2f} s of CPU; the loop was held {max(gaps) * 1000:.0f} ms "
          f"of CPU at most, over {len(gaps)} turns")  # fmt: skip
    assert count == repo.records
    assert max(gaps) < MAX_HOLD_S, f"the event loop was held for {max(gaps):.2f} s of CPU"
    assert took > 10 * max(gaps)  # the read was cut into many turns, whatever the machine's speed
