"""Shared benchmark plumbing: a Redis to measure against, timing, and result printing."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from redis.typing import EncodableT, FieldT

from streams import redis_url_or_embedded


@contextlib.contextmanager
def bench_redis_url() -> Iterator[str]:
    with redis_url_or_embedded(os.environ.get("REDIS_URL")) as url:
        yield url


class Timer:
    """Wall-clock seconds of a block."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def report(name: str, rows: list[dict[str, Any]]) -> None:
    """Print a table and append the figures to bench/results/<name>.jsonl (not committed)."""
    python = f"{platform.python_implementation()} {platform.python_version()}"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n== {name}  ({python}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, load {load})")
    for row in rows:
        print("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    with (out / f"{name}.jsonl").open("a") as fh:
        fh.write(json.dumps({"at": time.time(), "load": os.getloadavg(), "rows": rows}) + "\n")


def _fmt(v: Any) -> str:
    return (
        f"{v:,.0f}" if isinstance(v, float) and v > 100 else (f"{v:.3f}" if isinstance(v, float) else str(v))
    )


def xfields(fields: Mapping[bytes, bytes]) -> dict[FieldT, EncodableT]:
    """Entry fields as redis-py's `xadd` is annotated to take them (a dict of its own key type)."""
    return dict(fields.items())
