"""Benchmark: repo CAR -> records, against raw `libipld.decode_car` measured in the same run.

Builds a repo of realistic small records (posts, likes, follows, reposts) with the project's writer,
then times both, in pairs run next to each other (9 by default):
  baseline  libipld.decode_car(car_bytes)  (Rust; framing + decoding every block, no CID check)
  ours      read_repo over an async source of 64 KiB chunks: framing, sha-256 check of every
            block, commit parse, MST walk in key order, every record decoded.
Prints records/s for both (best run) and the ratio ours/baseline as the median of the pairs'
ratios (target >= 0.6): pairs measured side by side cancel the drift of a shared 2-core VM.

    uv run python bench/bench_car.py [--records N] [--runs R]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import libipld

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


async def _ours(car: bytes) -> int:
    """Run the project's CAR -> records path; return the record count."""
    reader = await read_repo(_chunks(car), did=DID)
    count = 0
    async for _ in reader.records():
        count += 1
    return count


def _timed(fn: Any) -> tuple[float, Any]:
    """Wall time of one call after a full collection, so earlier garbage is not billed to it."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _paired(base: Any, ours: Any, runs: int) -> tuple[list[float], list[float], Any, Any]:
    """Times of both paths, run in pairs (alternating which goes first) so machine drift hits
    both alike; returns each side's times in run order and their last results."""
    base_times: list[float] = []
    ours_times: list[float] = []
    base_result = ours_result = None
    for n in range(runs):
        for side in ("base", "ours") if n % 2 == 0 else ("ours", "base"):
            if side == "base":
                elapsed, base_result = _timed(base)
                base_times.append(elapsed)
            else:
                elapsed, ours_result = _timed(ours)
                ours_times.append(elapsed)
    return base_times, ours_times, base_result, ours_result


def main() -> int:
    """Build the repo, time both paths, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    start = time.perf_counter()
    key = SigningKey.generate(seed=b"bench")
    built = build_repo(DID, _records(args.records), rev="3kbenchbench22", signing_key=key)
    print(f"built {args.records} records, {len(built.blocks)} blocks, {len(built.car) / 1e6:.1f} MB "
          f"in {time.perf_counter() - start:.2f}s")  # fmt: skip

    base_times, ours_times, (_, blocks), count = _paired(
        lambda: libipld.decode_car(built.car), lambda: anyio.run(_ours, built.car), args.runs
    )
    assert count == args.records, (count, args.records)
    assert len(blocks) == len(built.blocks)
    ratios = sorted(b / o for b, o in zip(base_times, ours_times, strict=True))
    base_s, ours_s = min(base_times), min(ours_times)
    base_rate, ours_rate = args.records / base_s, args.records / ours_s
    print(f"baseline libipld.decode_car: {base_s * 1000:8.1f} ms  {base_rate:12,.0f} records/s  (best)")
    print(f"streamfill read_repo:       {ours_s * 1000:8.1f} ms  {ours_rate:12,.0f} records/s  (best)")
    print("times ms: baseline", sorted(round(t * 1000) for t in base_times),
          "ours", sorted(round(t * 1000) for t in ours_times))  # fmt: skip
    median, best = ratios[len(ratios) // 2], ours_rate / base_rate
    spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}"
    print(f"ratio ours/baseline: {median:.2f} median of {len(ratios)} pairs ({spread}); "
          f"best vs best {best:.2f}  (target >= 0.6)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
