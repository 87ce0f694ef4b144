"""Devnet generation: seconds and records/s to build the initial network (repos, MSTs, commits).

The test suite checks that generation does linear work (one MST build and one signed commit per
repo: tests/devnet/test_devnet_generation.py); how long it takes is measured here.

    BENCH_DEVNET_REPOS=500,2000   sizes, comma-separated (500: the demo's default, ~114k records)
    BENCH_DEVNET_SEED=1
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Timer, report
from devnet.config import DevnetConfig
from devnet.generate import generate_world

SIZES = [int(n) for n in os.environ.get("BENCH_DEVNET_REPOS", "500,2000").split(",")]
SEED = int(os.environ.get("BENCH_DEVNET_SEED", "1"))


def main() -> None:
    rows = []
    for repos in SIZES:
        with Timer() as t:
            world = generate_world(DevnetConfig(repos=repos, seed=SEED))
        records = sum(len(a.records) for a in world.accounts)
        rows.append(
            {"repos": repos, "records": records, "seconds": t.seconds, "records_per_s": records / t.seconds}
        )
    report("bench_devnet", rows)


if __name__ == "__main__":
    main()
