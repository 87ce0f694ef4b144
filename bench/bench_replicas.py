"""CPU per record of the backfillers and the indexers at 1 and at 4 replicas, on the same work.

Runs `streamfill demo --json` on the same network (same repos, same seed, no live firehose, so
the same records) with 1 backfiller + 1 indexer, then 4 + 4, and prints each kind's CPU seconds
(user + system, summed over its replicas, from start-up to exit: the demo reaps each child and
reports `cpu_s`) per record indexed, and the ratio 4 replicas / 1 (target: <= 1.15). `work` is
the same without each process's start-up (the CPU it had used when it logged "worker ready":
imports, connections, groups), a fixed cost per replica that a short run cannot amortize: the
ratio of the totals falls towards the work ratio as the network grows (BENCH_REPLICAS_REPOS).
Both shapes run ROUNDS times, alternating; the ratios are of the medians.

    BENCH_REPLICAS_REPOS=500
    BENCH_REPLICAS_SEED=1
    BENCH_REPLICAS_ROUNDS=1
    BENCH_REPLICAS_N=1,4           replica counts (backfillers = indexers = N)
    BENCH_REPLICAS_ARGS="..."      more `streamfill demo` arguments (default: --rate 0)
    BENCH_REPLICAS_BYTECODE=1      0: leave PYTHONDONTWRITEBYTECODE as it is

Every process imports from compiled bytecode, as in the image (compose/Dockerfile compiles it):
an environment with PYTHONDONTWRITEBYTECODE=1 and a venv without .pyc files (`uv sync`'s
default) makes each worker compile its imports anew, ~1.2 s of CPU per process on this machine,
which would count as replica cost. The bytecode goes to bench/results/pycache
(PYTHONPYCACHEPREFIX), written by a warm-up import before the runs.

Against embedded Valkey / PostgreSQL (started by the demo) unless REDIS_URL / DATABASE_URL are set.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import report
from bench.bench_demo import run_demo

REPOS = int(os.environ.get("BENCH_REPLICAS_REPOS", "500"))
SEED = os.environ.get("BENCH_REPLICAS_SEED", "1")
ROUNDS = int(os.environ.get("BENCH_REPLICAS_ROUNDS", "1"))
COUNTS = [int(n) for n in os.environ.get("BENCH_REPLICAS_N", "1,4").split(",")]
EXTRA = shlex.split(os.environ.get("BENCH_REPLICAS_ARGS", "--rate 0"))
# The target: 4 replicas cost at most 15 % more CPU per record than 1.
RATIO_TARGET = 1.15
KINDS = ("backfiller", "indexer")
BYTECODE = os.environ.get("BENCH_REPLICAS_BYTECODE", "1") != "0"


def use_bytecode() -> None:
    """Children (and theirs) write and read .pyc files under bench/results/pycache; warm it."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(Path(__file__).with_name("results") / "pycache")
    warm = "import workers.cli, workers.backfiller.worker, workers.indexer.worker, streams._http"
    subprocess.run([sys.executable, "-c", warm], check=True)


def one_run(n: int) -> dict[str, Any]:
    doc = run_demo(REPOS, ["--seed", SEED, "--backfillers", str(n), "--indexers", str(n), *EXTRA])
    if not doc["ok"]:
        raise SystemExit(f"bench_replicas: the run with {n} replicas was not exact: {doc}")
    row: dict[str, Any] = {"replicas": n, "records": doc["indexed"], "pipeline_s": doc["pipeline_s"]}
    row["seconds"] = doc["seconds"]
    records = max(doc["indexed"], 1)
    for kind in KINDS:
        cpu, startup = doc["cpu_s"][kind], doc["startup_cpu_s"][kind]
        row[f"{kind}_cpu_s"] = cpu
        row[f"{kind}_startup_cpu_s"] = startup
        row[f"{kind}_us_per_record"] = 1e6 * cpu / records
        row[f"{kind}_work_us_per_record"] = 1e6 * (cpu - startup) / records
    return row


def main() -> None:
    if BYTECODE:
        use_bytecode()
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in COUNTS}
    for _ in range(ROUNDS):
        for n in COUNTS:
            runs[n].append(one_run(n))
    rows = [row for n in COUNTS for row in runs[n]]
    base, top = COUNTS[0], COUNTS[-1]
    summary: dict[str, Any] = {"replicas": f"{top} vs {base}"}
    for kind in KINDS:
        for key in (f"{kind}_us_per_record", f"{kind}_work_us_per_record"):
            top_median = statistics.median(r[key] for r in runs[top])
            summary[key.replace("us_per_record", "ratio")] = top_median / statistics.median(
                r[key] for r in runs[base]
            )
    summary["target"] = f"<= {RATIO_TARGET}"
    summary["bytecode"] = BYTECODE
    report("bench_replicas", [*rows, summary])


if __name__ == "__main__":
    main()
