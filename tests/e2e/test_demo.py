"""End to end at small scale: devnet -> ingester -> 2 backfillers -> 2 indexers -> PostgreSQL,
as separate OS processes, verified exactly against devnet's ground truth; once plain, once with
workers SIGKILLed and restarted in the middle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def run_demo(tmp_path: Path, redis_url: str, database_url: str, *args: str) -> dict[str, object]:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "workers.cli", "demo", "--json", "--workdir", str(tmp_path), *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert out.stdout.strip(), f"no verdict; stderr:\n{out.stderr[-3000:]}"
    verdict: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == (0 if verdict["ok"] else 1)
    return verdict


def test_pipeline_is_exact(tmp_path: Path, redis_url: str, database_url: str) -> None:
    verdict = run_demo(tmp_path, redis_url, database_url, "--repos", "40", "--rate", "25", "--seed", "3")
    assert verdict["ok"] is True, verdict
    assert verdict["expected"] == verdict["indexed"] and int(verdict["expected"]) > 500  # type: ignore[call-overload]
    assert (verdict["missing"], verdict["extra"], verdict["stale"]) == (0, 0, 0)
    assert verdict["aggregates_ok"] is True


def test_pipeline_is_exact_with_workers_killed(tmp_path: Path, redis_url: str, database_url: str) -> None:
    verdict = run_demo(
        tmp_path,
        redis_url,
        database_url,
        "--repos",
        "60",
        "--rate",
        "25",
        "--seed",
        "4",
        "--chaos",
        "--chaos-interval",
        "0.7",
    )
    assert verdict["ok"] is True, verdict
    assert int(verdict["kills"]) >= 2  # type: ignore[call-overload]
    assert (verdict["missing"], verdict["extra"], verdict["stale"]) == (0, 0, 0)


def test_pipeline_is_exact_on_a_cluster_with_partitions(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    """3 masters (a replica each), 6 partitions per DID stream, WAIT 1 on every write."""
    verdict = run_demo(
        tmp_path, redis_url, database_url, "--cluster", "3", "--repos", "30", "--rate", "20", "--seed", "6"
    )
    assert verdict["ok"] is True, verdict
    assert (verdict["missing"], verdict["extra"], verdict["stale"]) == (0, 0, 0)
    assert int(verdict["expected"]) > 300  # type: ignore[call-overload]


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
    assert verdict["master_failovers"] == 1 and int(verdict["kills"]) >= 2  # type: ignore[call-overload]
    assert (verdict["missing"], verdict["extra"], verdict["stale"]) == (0, 0, 0)
