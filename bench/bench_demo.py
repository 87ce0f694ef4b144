"""The whole pipeline at a given size: `streamfill demo --json` as a child process, its phases.

Prints, per run: records indexed, pipeline seconds and records/s (children started -> listing
done and every stream drained), settle seconds, verify seconds, the devnet's start-up
(generation included), the database's bytes per live record, and verify's share of the
pipeline phase (target: small at any size; its baseline is the pipeline phase of the same run).
An exact verdict is required: a run that is not `ok` is printed with its mismatch counts, and
the benchmark exits 1.

    BENCH_DEMO_REPOS=2000        sizes, comma-separated (e.g. 2000,20000)
    BENCH_DEMO_SEED=1
    BENCH_DEMO_ARGS="--rate 20"  more `streamfill demo` arguments

Against embedded Valkey / PostgreSQL (started by the demo) unless REDIS_URL / DATABASE_URL are
set. To add a figure (e.g. replica CPU), add it to the demo's JSON and to `ROW`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import report

SIZES = [int(n) for n in os.environ.get("BENCH_DEMO_REPOS", "2000").split(",")]
SEED = int(os.environ.get("BENCH_DEMO_SEED", "1"))
EXTRA = shlex.split(os.environ.get("BENCH_DEMO_ARGS", ""))
# Verify must stay a small part of the run however big the network.
VERIFY_SHARE_TARGET = 0.1
# The demo JSON fields printed, in order.
ROW = (
    "expected",
    "indexed",
    "pipeline_s",
    "records_per_s",
    "settle_s",
    "verify_s",
    "devnet_startup_s",
    "database_bytes_per_record",
)


def run_demo(repos: int, extra: list[str] = EXTRA) -> dict[str, Any]:
    """One `streamfill demo --json` run (`extra`: more of its arguments); its verdict document."""
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as workdir:
        cmd = [
            sys.executable,
            "-m",
            "workers.cli",
            "demo",
            "--json",
            "--repos",
            str(repos),
            "--seed",
            str(SEED),
            "--timeout",
            "7200",
            "--workdir",
            workdir,
            *extra,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = out.stdout.strip().splitlines()
        if not lines:
            raise SystemExit(f"bench_demo: no verdict for --repos {repos}:\n{out.stderr[-3000:]}")
        doc: dict[str, Any] = json.loads(lines[-1])
    return doc


def main() -> None:
    rows = []
    for repos in SIZES:
        doc = run_demo(repos)
        row: dict[str, Any] = {"repos": repos, "ok": doc["ok"], **{k: doc[k] for k in ROW}}
        row["verify_share"] = doc["verify_s"] / doc["pipeline_s"]
        row["target"] = f"<= {VERIFY_SHARE_TARGET}"
        if not doc["ok"]:
            row |= {k: doc[k] for k in ("missing", "extra", "stale", "samples")}
        rows.append(row)
    report("bench_demo", rows)
    if not all(row["ok"] for row in rows):
        raise SystemExit("bench_demo: a run was not exact")


if __name__ == "__main__":
    main()
