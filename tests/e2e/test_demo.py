"""End to end at small scale: devnet -> ingester -> 2 backfillers -> 2 indexers -> PostgreSQL,
as separate OS processes, verified exactly against devnet's ground truth; once plain, and with
workers SIGKILLed and restarted in the middle: with a fresh random seed each run (printed; set
STREAMFILL_CHAOS_SEED to replay one) and with seeds that once failed, kept as regression cases."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e._group import GroupRun, group_members
from workers.demo.procs import Child, child_env

pytestmark = pytest.mark.slow

# Below pytest-timeout's 300 s, so that the demo's own timeout (with the seed) is what reports.
DEMO_TIMEOUT_S = 270


def chaos_seed() -> int:
    """STREAMFILL_CHAOS_SEED if set (to replay a failure), else a fresh random seed."""
    value = os.environ.get("STREAMFILL_CHAOS_SEED")
    return int(value) if value else random.SystemRandom().randrange(1, 10**6)


def run_demo(tmp_path: Path, redis_url: str, database_url: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "workers.cli", "demo", "--json", "--workdir", str(tmp_path), *args]
    with GroupRun(cmd, env=env) as run:
        try:
            stdout, stderr = run.proc.communicate(timeout=DEMO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"demo {' '.join(args)} did not finish in {DEMO_TIMEOUT_S}s")
    assert not run.leftovers, f"demo {' '.join(args)} left processes behind: {run.leftovers}"
    assert stdout.strip(), f"demo {' '.join(args)}: no verdict; stderr:\n{stderr[-3000:]}"
    verdict: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    assert run.proc.returncode == (0 if verdict["ok"] else 1)
    return verdict


def test_pipeline_is_exact(tmp_path: Path, redis_url: str, database_url: str) -> None:
    verdict = run_demo(tmp_path, redis_url, database_url, "--repos", "40", "--rate", "25", "--seed", "3")
    assert verdict["ok"] is True, verdict
    assert verdict["expected"] == verdict["indexed"] and int(verdict["expected"]) > 500
    assert (verdict["missing"], verdict["extra"], verdict["stale"]) == (0, 0, 0)
    assert verdict["aggregates_ok"] is True
    # Like its database, a correct run's keys are gone from the (possibly shared) Redis.
    with redis.Redis.from_url(redis_url) as client:
        assert list(client.scan_iter(match=f"{verdict['prefix']}:*", count=1000)) == []


@pytest.mark.parametrize(
    ("seed", "interval"),
    [
        pytest.param(None, "0.7", id="random-seed"),
        # Issue #10: `--repos 60 --rate 25 --seed 4 --chaos --chaos-interval 0.4` lost 9 records
        # (accounts inactive when listed, reactivated later).
        pytest.param(4, "0.4", id="seed-4"),
    ],
)
def test_pipeline_is_exact_with_workers_killed(
    tmp_path: Path, redis_url: str, database_url: str, seed: int | None, interval: str
) -> None:
    seed = chaos_seed() if seed is None else seed
    args = ["--repos", "60", "--rate", "25", "--seed", str(seed), "--chaos", "--chaos-interval", interval]
    print(f"chaos demo: {' '.join(args)} (replay: STREAMFILL_CHAOS_SEED={seed})")
    verdict = run_demo(tmp_path, redis_url, database_url, *args)
    replay = f"seed {seed} (replay: STREAMFILL_CHAOS_SEED={seed} or `streamfill demo {' '.join(args)}`)"
    assert verdict["ok"] is True, f"{replay}: {verdict}"
    kills = int(verdict["kills"])
    assert kills >= 3, f"{replay}: {verdict}"  # the demo kills at least CHAOS_MIN_KILLS
    assert (verdict["missing"], verdict["extra"], verdict["stale"]) == (0, 0, 0), f"{replay}: {verdict}"


HANG = "import os; r, w = os.pipe(); os.read(r, 1)"  # blocks until killed


def spawner(*, hang: bool) -> list[str]:
    """A command that starts a hanging child, prints its pid, then hangs too or exits."""
    script = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {HANG!r}])\n"
        "print(child.pid, flush=True)\n"
    )
    return [sys.executable, "-c", script + (HANG if hang else "")]


def test_a_run_that_times_out_leaves_no_process_behind() -> None:
    # A command that spawns a child and then hangs, as a stuck demo would.
    with GroupRun(spawner(hang=True)) as run:
        assert run.proc.stdout is not None
        child = int(run.proc.stdout.readline())  # the child exists now
        assert set(group_members(run.pgid)) == {run.proc.pid, child}
        with pytest.raises(subprocess.TimeoutExpired):
            run.proc.communicate(timeout=0.2)
    assert group_members(run.pgid) == []
    assert run.proc.returncode == -9


def test_leftovers_of_a_command_that_ended_are_reported_and_killed() -> None:
    # The parent exits at once, its child lingers: the leak is seen, then cleaned up.
    with GroupRun(spawner(hang=False)) as run:
        assert run.proc.stdout is not None
        child = int(run.proc.stdout.readline())
        run.proc.wait(timeout=30)
    assert run.leftovers == [child]
    assert group_members(run.pgid) == []


def test_chaos_counts_a_worker_as_up_only_once_it_has_logged_since_its_start(tmp_path: Path) -> None:
    # `demo --chaos` kills again only once its last victim is up: a child restarted is not up
    # again until it has logged anew (its imports alone take seconds on a loaded machine).
    child = Child("devnet", ["devnet", "--repos", "2"], child_env({}), tmp_path / "devnet.log")
    try:
        child.start()
        wait_for(lambda: child.up, "the devnet logged")
        child.kill()
        assert not child.up and child.restart_if_dead()
        assert child.log_mark == (tmp_path / "devnet.log").stat().st_size > 0
        wait_for(lambda: child.up, "the restarted devnet logged")
    finally:
        child.stop()
    assert not child.up


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.02)


def test_pipeline_is_exact_on_a_cluster_with_partitions(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    """3 masters (a replica each), 6 partitions per DID stream, WAIT 1 on every write."""
    verdict = run_demo(
        tmp_path, redis_url, database_url, "--cluster", "3", "--repos", "30", "--rate", "20", "--seed", "6"
    )
    assert verdict["ok"] is True, verdict
    assert (verdict["missing"], verdict["extra"], verdict["stale"]) == (0, 0, 0)
    assert int(verdict["expected"]) > 300


def test_pipeline_is_exact_on_a_cluster_through_a_master_failover_and_kills(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    """--chaos on a cluster: workers SIGKILLed, and once a master, whose replica takes over."""
    verdict = run_demo(
        tmp_path,
        redis_url,
        database_url,
        *("--cluster", "3", "--partitions", "3", "--repos", "40", "--rate", "20", "--seed", "7"),
        *("--chaos", "--chaos-interval", "1.0"),
    )
    assert verdict["ok"] is True, verdict
    assert verdict["master_failovers"] == 1 and int(verdict["kills"]) >= 2
    assert (verdict["missing"], verdict["extra"], verdict["stale"]) == (0, 0, 0)
