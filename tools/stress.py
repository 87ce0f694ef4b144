"""`make stress`: the chaos demo K times with fresh random seeds; prints `N/K exact` and each failing seed.

Each run is `streamfill demo --json --chaos` (workers SIGKILLed and restarted throughout) on a
network built from its own random seed, verified exactly against the devnet's ground truth. A
run that is not exact (records missing, extra or stale), that ends without a verdict or that
times out counts as a failure; its seed is printed with the command that replays it, and its
work directory (logs of the devnet and of every worker) is kept. Exits 1 if any run failed.

    STRESS_K=10            runs (or --runs)
    STRESS_PARALLEL=1      runs at a time (or --parallel); each takes about 2 cores
    STRESS_ARGS="..."      more `streamfill demo` arguments (default: the issue #10 case,
                           --repos 60 --rate 25 --chaos-interval 0.4)

Each run starts its own embedded Valkey and PostgreSQL unless REDIS_URL / DATABASE_URL are set.
Every run is a process group of its own, killed whole when it ends or times out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARGS = "--repos 60 --rate 25 --chaos-interval 0.4"


@dataclass(frozen=True)
class Outcome:
    seed: int
    exact: bool
    summary: str
    seconds: float
    workdir: Path


def demo_args(seed: int, extra: list[str]) -> list[str]:
    return ["demo", "--json", "--chaos", *extra, "--seed", str(seed)]


def run_once(seed: int, extra: list[str], timeout_s: float, root: Path) -> Outcome:
    workdir = Path(tempfile.mkdtemp(prefix=f"seed{seed}-", dir=root))
    cmd = [sys.executable, "-m", "workers.cli", *demo_args(seed, extra), "--workdir", str(workdir)]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the demo, its devnet and workers: one process group
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return Outcome(seed, False, f"timed out after {timeout_s:.0f} s", timeout_s, workdir)
    finally:
        _kill_group(proc)
    seconds = time.monotonic() - started
    (workdir / "demo.stderr.log").write_text(stderr)
    lines = stdout.strip().splitlines()
    try:
        verdict = json.loads(lines[-1])
    except (IndexError, ValueError):
        last = stderr.strip().splitlines()[-1:] or ["no output"]
        return Outcome(seed, False, f"no verdict (exit {proc.returncode}): {last[0][:200]}", seconds, workdir)
    counts = ", ".join(f"{k} {verdict.get(k)}" for k in ("indexed", "missing", "extra", "stale", "kills"))
    exact = verdict.get("ok") is True and proc.returncode == 0
    return Outcome(seed, exact, ("exact: " if exact else "NOT exact: ") + counts, seconds, workdir)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="stress", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # String defaults go through `type` too: a bad STRESS_K is refused like a bad --runs.
    parser.add_argument("--runs", type=int, default=os.environ.get("STRESS_K", "10"), metavar="K")
    parser.add_argument("--parallel", type=int, default=os.environ.get("STRESS_PARALLEL", "1"), metavar="N")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S", help="per run (default 600)")
    parser.add_argument("--args", default=os.environ.get("STRESS_ARGS", DEFAULT_ARGS), help="demo arguments")
    options = parser.parse_args()
    if options.runs < 1 or options.parallel < 1:
        print("stress: --runs and --parallel must be at least 1", file=sys.stderr)
        return 2
    extra = shlex.split(options.args)
    rng = random.SystemRandom()
    seeds = [rng.randrange(1, 10**6) for _ in range(options.runs)]
    root = Path(tempfile.mkdtemp(prefix="streamfill-stress-"))
    k = options.runs
    print(f"stress: {k} chaos demos, seeds {' '.join(map(str, seeds))}", flush=True)
    print(f"stress: streamfill {shlex.join(demo_args(0, extra)[:-1])} <seed>", flush=True)

    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=options.parallel) as pool:
        futures = [pool.submit(run_once, seed, extra, options.timeout, root) for seed in seeds]
        for future in futures:
            outcome = future.result()
            outcomes.append(outcome)
            print(
                f"run {len(outcomes)}/{k} seed {outcome.seed}: {outcome.summary} ({outcome.seconds:.0f} s)",
                flush=True,
            )
            if outcome.exact:
                shutil.rmtree(outcome.workdir, ignore_errors=True)

    failed = [o for o in outcomes if not o.exact]
    print(f"{k - len(failed)}/{k} exact")
    for o in failed:
        replay = shlex.join(["streamfill", *demo_args(o.seed, extra)])
        print(f"failed seed {o.seed}: {o.summary}; replay: {replay}; logs: {o.workdir}")
    if not failed:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
