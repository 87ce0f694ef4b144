"""Benchmark: repo CAR -> records, against raw `libipld.decode_car` measured in the same run.

Builds a repo of realistic small records (posts, likes, follows, reposts) with the project's writer,
then times both, in pairs run next to each other (9 by default, alternating which goes first):
  baseline  libipld.decode_car(car_bytes)  (Rust; framing + decoding every block into Python
            objects, no CID check, no tree check)
  ours      read_repo over an async source of 64 KiB chunks, as the backfiller reads it: framing,
            sha-256 check of every block, commit parse, MST walked in key order and checked as a
            tree (layers, order, shape), every record decoded, in slices (RepoReader.slices).
Times are CPU time of this process (a shared machine deschedules it at random). The objects the
benchmark itself holds are frozen out of the garbage collector, and each side's result is dropped
before the next run, so each side pays for the collections its own objects cause: decode_car's
126k live dicts trigger full collections, the reader's short-lived slices do not. Both ratios are
printed, as the median of the pairs' ratios: with the collector on (what a program pays), and with
it off (the work itself). Target: >= 0.6.

    uv run python bench/bench_car.py [--records N] [--runs R] [--memory-bytes B]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import libipld

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atp.blocks import DEFAULT_MEMORY_BYTES
from atp.crypto import SigningKey
from atp.repo import build_repo, read_repo
from atp.tid import TidClock

CHUNK = 64 * 1024
DID = "did:plc:benchbenchbenchbenchbenc"


def _records(n: int) -> Iterator[tuple[str, Any]]:
    """Yield n realistic small records in a bluesky-like mix."""
    clock = TidClock(start_us=1_700_000_000_000_000)
    for i in range(n):
        rkey = clock.next()
        created = "2024-05-01T12:00:00.000Z"
        subject = {"uri": f"at://did:plc:other{i % 997:05d}/app.bsky.feed.post/{rkey}",
                   "cid": "bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454"}  # fmt: skip
        kind = i % 10
        if kind < 3:
            text = f"post number {i}: the quick brown fox jumps over the lazy dog"
            yield f"app.bsky.feed.post/{rkey}", {"$type": "app.bsky.feed.post", "text": text,
                                                 "langs": ["en"], "createdAt": created}  # fmt: skip
        elif kind < 8:
            yield f"app.bsky.feed.like/{rkey}", {"$type": "app.bsky.feed.like", "subject": subject,
                                                 "createdAt": created}  # fmt: skip
        elif kind < 9:
            follow = {"$type": "app.bsky.graph.follow", "subject": f"did:plc:o{i:05d}", "createdAt": created}
            yield f"app.bsky.graph.follow/{rkey}", follow
        else:
            yield f"app.bsky.feed.repost/{rkey}", {"$type": "app.bsky.feed.repost", "subject": subject,
                                                   "createdAt": created}  # fmt: skip


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    """Serve bytes as 64 KiB chunks, like an HTTP response body."""
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]


async def _ours(car: bytes, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> int:
    """Run the project's CAR -> records path; return the record count."""
    reader = await read_repo(_chunks(car), did=DID, memory_bytes=memory_bytes)
    count = 0
    async for part in reader.slices():  # columns of decoded records, as the backfiller takes them
        count += len(part.records)
    reader.close()
    return count


def _timed(fn: Any, collect: bool) -> tuple[float, Any]:
    """CPU time of one call after a full collection; with `collect` False, the collector is off."""
    gc.collect()
    if not collect:
        gc.disable()
    start = time.process_time()
    try:
        result = fn()
    finally:
        elapsed = time.process_time() - start
        gc.enable()
    return elapsed, result


def _paired(base: Any, ours: Any, runs: int, collect: bool) -> tuple[list[float], list[float]]:
    """Times of both paths, run in pairs (alternating which goes first) so machine drift hits
    both alike; a result is dropped before the next run."""
    base_times: list[float] = []
    ours_times: list[float] = []
    for n in range(runs):
        for fn, times in ((base, base_times), (ours, ours_times))[:: 1 if n % 2 == 0 else -1]:
            elapsed, _ = _timed(fn, collect)
            times.append(elapsed)
    return base_times, ours_times


def _report(label: str, records: int, base_times: list[float], ours_times: list[float]) -> float:
    """Print one mode's figures; return the median ratio."""
    ratios = sorted(b / o for b, o in zip(base_times, ours_times, strict=True))
    median = ratios[len(ratios) // 2]
    base_s, ours_s = min(base_times), min(ours_times)
    print(f"{label}: baseline {base_s * 1000:6.1f} ms ({records / base_s:10,.0f} records/s), "
          f"read_repo {ours_s * 1000:6.1f} ms ({records / ours_s:10,.0f} records/s)  (best)")  # fmt: skip
    print(f"  cpu ms: baseline {sorted(round(t * 1000) for t in base_times)}  "
          f"ours {sorted(round(t * 1000) for t in ours_times)}")  # fmt: skip
    print(f"  ratio ours/baseline: {median:.2f} median of {len(ratios)} pairs "
          f"({ratios[0]:.2f}-{ratios[-1]:.2f})  (target >= 0.6)")  # fmt: skip
    return median


def main() -> int:
    """Build the repo, time both paths, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--memory-bytes", type=int, default=DEFAULT_MEMORY_BYTES,
                        help="the reader's memory budget (0: every block spills to disk)")  # fmt: skip
    args = parser.parse_args()

    start = time.perf_counter()
    key = SigningKey.generate(seed=b"bench")
    built = build_repo(DID, _records(args.records), rev="3kbenchbench22", signing_key=key)
    car = built.car
    print(f"built {args.records} records, {len(built.blocks)} blocks, {len(car) / 1e6:.1f} MB "
          f"in {time.perf_counter() - start:.2f}s")  # fmt: skip
    blocks = len(built.blocks)
    del built
    assert anyio.run(_ours, car) == args.records
    assert len(libipld.decode_car(car)[1]) == blocks
    gc.collect()
    gc.freeze()  # what the benchmark holds is nobody's garbage

    def base() -> None:
        libipld.decode_car(car)

    def ours() -> None:
        anyio.run(_ours, car, args.memory_bytes)

    load = "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{load}; CPU time per run; memory budget {args.memory_bytes:,} bytes")
    for label, collect in (("gc on ", True), ("gc off", False)):
        _report(label, args.records, *_paired(base, ours, args.runs, collect))
    return 0


if __name__ == "__main__":
    sys.exit(main())
