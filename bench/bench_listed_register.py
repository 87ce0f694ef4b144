"""Memory of the ingester's listed register at a given network size (docs/operations.md).

Fills a sample of the register's buckets with as many entries as a network of REPOS repos puts in
them (Poisson-spread, real field and value sizes, through `listed_mark`), measures `used_memory`
before and after, and extrapolates to all buckets. Values carry a PDS's host tag, as with
`INGESTER_DISCOVERY=hosts` or `both` (the PDS that lists a repo active takes its slot over);
`BENCH_UNTAGGED=1` measures the relay-only register. Not part of `make bench`:

    uv run --frozen python bench/bench_listed_register.py            # 40M repos
    BENCH_REPOS=1000000 uv run --frozen python bench/bench_listed_register.py
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_redis_url
from streams import Keys
from workers.ingester.register import LISTED_BUCKETS, listed_mark, mark_value

REPOS = int(os.environ.get("BENCH_REPOS", "40000000"))
SAMPLE_BUCKETS = 8192
PREFIX = "benchreg"
REV = "3l3qo2vutsw2b"
SOURCE = None if os.environ.get("BENCH_UNTAGGED") else "morel.us-east.host.bsky.network"


def main() -> None:
    keys = Keys(PREFIX)
    rng = random.Random(1)
    per_bucket = REPOS / LISTED_BUCKETS
    wanted = dict.fromkeys(range(SAMPLE_BUCKETS), 0)
    for b in wanted:  # Poisson(per_bucket) by counting exponential gaps
        t, n = rng.expovariate(1.0), 0
        while t < per_bucket:
            n += 1
            t += rng.expovariate(1.0)
        wanted[b] = n
    with bench_redis_url() as url:
        r = redis.Redis.from_url(url)
        r.flushdb()
        before = int(r.info("memory")["used_memory"])
        pipe, entries = r.pipeline(transaction=False), 0
        field_size = len(listed_mark(keys, "repo_backfill", "did:plc:x", None, True).field)
        for bucket, n in wanted.items():  # a DID's field is 5 digest bytes: random bytes are alike
            for _ in range(n):
                key = keys.listed("repo_backfill", bucket)
                pipe.hset(key, rng.randbytes(field_size), mark_value(REV, True, SOURCE))
                entries += 1
            if len(pipe) >= 5000:
                pipe.execute()
        pipe.execute()
        after = int(r.info("memory")["used_memory"])
        pattern = keys.listed_pattern("repo_backfill")
        encodings = {r.object("encoding", k) for k in r.scan_iter(pattern, count=1000)}
        per_entry = (after - before) / entries
        total = per_entry * REPOS
        kinds = sorted(e.decode() for e in encodings)
        tagged = "untagged" if SOURCE is None else "tagged"
        print(f"repos {REPOS:,}: {per_bucket:.1f} per bucket, {tagged} values, encodings {kinds}")
        print(f"sample: {entries:,} entries in {SAMPLE_BUCKETS} buckets, {after - before:,} bytes")
        print(f"{per_entry:.1f} bytes per repo -> {total / 2**20:,.0f} MiB for {REPOS:,} repos")
        r.flushdb()


if __name__ == "__main__":
    main()
