"""Fixtures for the replayer: an Elasticsearch-compatible server, a Captain's Log root, configs."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.replayer._es_server import FakeElasticsearch
from workers.replayer.config import ReplayerConfig

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def es() -> Iterator[FakeElasticsearch]:
    with FakeElasticsearch() as server:
        yield server


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "telemetry" / "captains_log"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def config(redis_url: str, prefix: str, root: Path, tmp_path: Path, es: FakeElasticsearch) -> ReplayerConfig:
    """A replayer configuration of this test's own: its prefix, root, state directory and server."""
    return ReplayerConfig(
        redis_url=redis_url,
        prefix=prefix,
        es_url=es.url,
        root=root,
        state_dir=tmp_path / "state",
        consumer="replayer-test",
        bulk_max_docs=50,
        es_timeout_s=5.0,
        min_idle_ms=60_000,
        max_retries=2,
    )


def cli_env(config: ReplayerConfig, **extra: str) -> dict[str, str]:
    """The environment a `streamfill replayer` subprocess reads `config` from."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLAYER_", "ES_"))}
    env.update(
        REDIS_URL=config.redis_url or "",
        STREAMFILL_PREFIX=config.prefix,
        ES_URL=config.es_url,
        REPLAYER_ROOT=str(config.root),
        REPLAYER_STATE_DIR=str(config.state),
        REPLAYER_CONSUMER=config.consumer,
        REPLAYER_BULK_MAX_DOCS=str(config.bulk_max_docs),
        REPLAYER_ES_TIMEOUT_SECS=str(config.es_timeout_s),
        REPLAYER_MAX_RETRIES=str(config.max_retries),
    )
    env.update(extra)
    return env


def start_cli(
    config: ReplayerConfig, *args: str, stderr: Path | None = None, **env: str
) -> subprocess.Popen[str]:
    """`streamfill replayer ARGS` as a process; stderr to a file when given (to wait on log lines)."""
    err = stderr.open("w") if stderr is not None else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "replayer", *args],
            cwd=PROJECT,
            env=cli_env(config, **env),
            text=True,
            stdout=subprocess.PIPE,
            stderr=err if err is not None else subprocess.PIPE,
        )
    finally:
        if err is not None:
            err.close()


def run_cli(
    config: ReplayerConfig, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    proc = start_cli(config, *args, stderr=None, **env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def once_args(**kwargs: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"timeout": None, "json": True, **kwargs})
