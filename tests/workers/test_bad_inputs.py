"""A newcomer's bad inputs, across every command: one line on stderr naming the setting (or the
server and what to check), exit status 2, no traceback, and nothing created or changed."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

pytestmark = pytest.mark.anyio

PROJECT = Path(__file__).resolve().parents[2]
MISSING_DIR = "/nonexistent/streamfill-test/captains_log"


@dataclass(frozen=True)
class Bad:
    """One bad input: the command, its environment, and what its one line must name."""

    id: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()  # must not appear anywhere (passwords)


RELAY = {"INGESTER_RELAY_HOSTS": "https://relay.invalid"}


def settings_rows(root: str) -> list[Bad]:
    """Bad settings: refused before any server is contacted."""
    b, i, x = ("backfiller",), ("ingester",), ("indexer",)
    return [
        Bad(
            "concurrency-zero",
            b,
            {"BACKFILLER_CONCURRENCY": "0"},
            ("BACKFILLER_CONCURRENCY", "'0'", "from 1"),
        ),
        Bad("concurrency-negative", b, {"BACKFILLER_CONCURRENCY": "-3"}, ("BACKFILLER_CONCURRENCY", "'-3'")),
        Bad("concurrency-flag", (*b, "--concurrency", "0"), {}, ("BACKFILLER_CONCURRENCY", "--concurrency")),
        Bad("pds-rps-word", b, {"BACKFILLER_PDS_RPS": "fast"}, ("BACKFILLER_PDS_RPS", "'fast'", "a number")),
        Bad("metrics-port-word", b, {"METRICS_PORT": "abc"}, ("METRICS_PORT", "'abc'", "an integer")),
        Bad("metrics-port-range", b, {"METRICS_PORT": "70000"}, ("METRICS_PORT", "65535")),
        Bad(
            "metrics-port-rsky",
            b,
            {"BACKFILLER_METRICS_PORT": "0"},
            ("METRICS_PORT", "BACKFILLER_METRICS_PORT"),
        ),
        Bad(
            "bool-word",
            b,
            {"BACKFILLER_SKIP_SIGNATURE_VERIFICATION": "maybe"},
            ("SKIP_SIGNATURE", "true or false"),
        ),
        Bad(
            "alias-conflict",
            b,
            {"BACKFILLER_INPUT_STREAM": "a", "BACKFILLER_BACKFILL_STREAM": "b"},
            ("BACKFILLER_INPUT_STREAM", "BACKFILLER_BACKFILL_STREAM"),
        ),
        Bad(
            "backoff-order",
            b,
            {"BACKFILLER_RETRY_INITIAL_BACKOFF_MS": "5000", "BACKFILLER_RETRY_MAX_BACKOFF_MS": "100"},
            ("BACKFILLER_RETRY_INITIAL_BACKOFF_MS=5000", "BACKFILLER_RETRY_MAX_BACKOFF_MS=100"),
        ),
        Bad(
            "marks-order",
            b,
            {
                "BACKFILLER_FIREHOSE_STREAM_LOW_WATER_MARK": "200",
                "BACKFILLER_FIREHOSE_STREAM_HIGH_WATER_MARK": "100",
            },
            ("LOW_WATER_MARK=200", "HIGH_WATER_MARK=100", "below"),
        ),
        Bad(
            "same-streams",
            b,
            {"BACKFILLER_OUTPUT_STREAM": "repo_backfill"},
            ("BACKFILLER_FIREHOSE_STREAM", "differ"),
        ),
        Bad("plc-no-scheme", b, {"PLC_URL": "plc.directory"}, ("PLC_URL", "http")),
        Bad("grace-too-short", b, {"STREAMFILL_GRACE_SECS": "0"}, ("STREAMFILL_GRACE_SECS", "from 5")),
        Bad("log-level", b, {"STREAMFILL_LOG_LEVEL": "loud"}, ("STREAMFILL_LOG_LEVEL", "debug, info")),
        Bad(
            "rust-log-modules",
            b,
            {"RUST_LOG": "info,rsky_backfiller=debug"},
            ("STREAMFILL_LOG_LEVEL", "RUST_LOG"),
        ),
        Bad(
            "max-errors-zero",
            i,
            {**RELAY, "INGESTER_MAX_CONSECUTIVE_ERRORS": "0"},
            ("INGESTER_MAX_CONSECUTIVE_ERRORS",),
        ),
        Bad(
            "mode-unknown", i, {**RELAY, "INGESTER_MODE": "sideways"}, ("INGESTER_MODE", "backfill, firehose")
        ),
        Bad("no-hosts", i, {}, ("INGESTER_RELAY_HOSTS", "INGESTER_LABELER_HOSTS")),
        Bad(
            "labeler-mode-no-labelers",
            (*i, "--mode", "labeler"),
            RELAY,
            ("INGESTER_MODE=labeler", "LABELER_HOSTS"),
        ),
        Bad("list-limit", i, {**RELAY, "INGESTER_LIST_LIMIT": "5000"}, ("INGESTER_LIST_LIMIT", "1000")),
        Bad(
            "recheck-word",
            i,
            {**RELAY, "INGESTER_RECHECK_SECS": "soon"},
            ("INGESTER_RECHECK_SECS", "a number"),
        ),
        Bad("relay-hosts-bad", i, {"INGESTER_RELAY_HOSTS": "ftp://x"}, ("INGESTER_RELAY_HOSTS",)),
        Bad(
            "rsky-firehose-name",
            i,
            {**RELAY, "FEEDGEN_SUBSCRIPTION_PATH": "wss://x"},
            ("FEEDGEN_SUBSCRIPTION_PATH", "INGESTER_RELAY_HOSTS"),
        ),
        Bad("batch-size-zero", x, {"INDEXER_BATCH_SIZE": "0"}, ("INDEXER_BATCH_SIZE", "'0'")),
        Bad("pool-size-zero", (*x, "--pool-size", "0"), {}, ("DB_POOL_MAX_SIZE", "--pool-size")),
        Bad(
            "indexer-mode-empty",
            x,
            {"INDEXER_MODE": "stream", "INDEXER_STREAMS": "label_live"},
            ("INDEXER_MODE=stream",),
        ),
        Bad("rsky-pool-min-idle", x, {"DB_POOL_MIN_IDLE": "5"}, ("DB_POOL_MIN_IDLE", "DB_POOL_MAX_SIZE")),
        Bad("rsky-did-resolution", x, {"ENABLE_DID_RESOLUTION": "true"}, ("ENABLE_DID_RESOLUTION",)),
        Bad(
            "database-url-scheme",
            (*x, "--migrate"),
            {"DATABASE_URL": "mysql://db/x"},
            ("DATABASE_URL", "postgresql://"),
        ),
        Bad(
            "replayer-root-missing",
            ("replayer", "run-once"),
            {"REPLAYER_ROOT": MISSING_DIR},
            ("REPLAYER_ROOT", "does not exist"),
        ),
        Bad(
            "replayer-root-default",
            ("replayer", "run-once"),
            {},
            ("REPLAYER_ROOT=telemetry/captains_log", "relative to"),
        ),
        Bad("replayer-scan-root", ("replayer", "scan"), {"REPLAYER_ROOT": MISSING_DIR}, ("REPLAYER_ROOT",)),
        Bad(
            "replayer-status-root", ("replayer", "status"), {"REPLAYER_ROOT": MISSING_DIR}, ("REPLAYER_ROOT",)
        ),
        Bad(
            "es-url",
            ("replayer", "run-once"),
            {"REPLAYER_ROOT": root, "ES_URL": "notaurl"},
            ("ES_URL", "'notaurl'"),
        ),
        Bad(
            "bulk-docs-zero",
            ("replayer", "index"),
            {"REPLAYER_BULK_MAX_DOCS": "0"},
            ("REPLAYER_BULK_MAX_DOCS",),
        ),
        Bad(
            "interval-negative",
            ("replayer", "run", "--interval", "-1"),
            {"REPLAYER_ROOT": root},
            ("REPLAYER_INTERVAL", "--interval"),
        ),
        Bad(
            "replayer-same-streams",
            ("replayer", "scan"),
            {"REPLAYER_ROOT": root, "REPLAYER_STREAM": "x", "REPLAYER_RESULTS_STREAM": "x"},
            ("REPLAYER_STREAM=x", "REPLAYER_RESULTS_STREAM=x"),
        ),
        Bad("redis-url-word", ("status",), {"REDIS_URL": "notaurl"}, ("REDIS_URL", "'notaurl'", "redis://")),
        Bad("redis-url-scheme", ("trim", "s"), {"REDIS_URL": "http://h:1/0"}, ("REDIS_URL",)),
        Bad("prefix-glob", ("status",), {"STREAMFILL_PREFIX": "a*"}, ("STREAMFILL_PREFIX",)),
        Bad("demo-database-url", ("demo",), {"DATABASE_URL": "sqlite:///x"}, ("DATABASE_URL",)),
        Bad("usage-missing-arg", ("dlq", "list"), {}, ("streamfill dlq", "stream")),
        Bad("usage-unknown-flag", ("backfiller", "--concurency", "3"), {}, ("--concurency",)),
        Bad("usage-negative-count", ("dlq", "list", "s", "--count", "-1"), {}, ("--count", "'-1'")),
        *control_rows(),
    ]


def control_rows() -> list[Bad]:
    """Live overrides, resync, firehose replay and audit: refused before anything is written."""
    why = ("--reason", "r")
    return [
        Bad("override-unknown", ("config", "set", "NO_SUCH=1", "--for", "1m", *why), {}, ("NO_SUCH",)),
        Bad(
            "override-bounds",
            ("config", "set", "INDEXER_BATCH_SIZE=0", "--for", "1m", *why),
            {},
            ("INDEXER_BATCH_SIZE", "'0'"),
        ),
        Bad(
            "override-window", ("config", "set", "INDEXER_BATCH_SIZE=9", "--for", "9d", *why), {}, ("--for",)
        ),
        Bad("override-no-window", ("config", "set", "INDEXER_BATCH_SIZE=9", *why), {}, ("--for",)),
        Bad(
            "override-rule",
            ("config", "set", "INGESTER_LOW_WATER_MARK=200000", "--for", "1m", *why),
            {},
            ("INGESTER_LOW_WATER_MARK=200000", "INGESTER_HIGH_WATER_MARK=100000"),
        ),
        Bad(
            "override-not-live", ("config", "set", "PLC_URL=https://x", "--for", "1m", *why), {}, ("PLC_URL",)
        ),
        Bad("resync-not-a-did", ("resync", "--did", "bob", *why), {}, ("'bob' is not a DID",)),
        Bad(
            "replay-upside-down",
            ("firehose", "replay", "--relay", "https://relay.invalid", "--from-seq", "9", "--to-seq", "3"),
            {},
            ("not a window",),
        ),
        Bad("audit-since", ("audit", "--since", "yesterday"), {}, ("not a duration",)),
    ]


def _with(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rsplit('@', 1)[-1]}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def server_rows(redis_url: str, database_url: str, missing_db: str) -> list[Bad]:
    """Servers that cannot be used: one line with the URL (password masked) and what to check."""
    host = urlsplit(redis_url).netloc.rsplit("@", 1)[-1]
    wrong_user = urlsplit(redis_url)._replace(netloc=f"nobody:hunter2@{host}")
    return [
        Bad(
            "redis-refused",
            ("status",),
            {"REDIS_URL": "redis://127.0.0.1:1/0"},
            ("cannot reach Redis at redis://127.0.0.1:1/0", "connection refused", "REDIS_URL"),
        ),
        Bad(
            "redis-dns",
            ("backfiller",),
            {"REDIS_URL": "redis://nosuch.invalid:6379/0"},
            ("Redis at redis://nosuch.invalid", "host name not found"),
        ),
        Bad(
            "redis-auth",
            ("groups", "reset", "s", "g", "--to", "0"),
            {"REDIS_URL": urlunsplit(wrong_user)},
            ("refused the credentials", "nobody:***@"),
            ("hunter2",),
        ),
        Bad(
            "pg-refused",
            ("indexer", "--migrate"),
            {"DATABASE_URL": "postgresql://app:hunter2@127.0.0.1:1/x"},
            ("cannot reach PostgreSQL at postgresql://app:***@127.0.0.1:1/x", "DATABASE_URL"),
            ("hunter2",),
        ),
        Bad(
            "pg-no-database",
            ("indexer", "--migrate"),
            {"DATABASE_URL": _with(database_url, database=missing_db)},
            (missing_db, "does not exist"),
        ),
        Bad(
            "pg-no-role",
            ("indexer", "--verify", "/dev/null"),
            {"DATABASE_URL": _with(database_url, user="nosuchrole_x")},
            ("refused the login", "nosuchrole_x"),
        ),
    ]


def _run(row: Bad, base_env: dict[str, str]) -> str | None:
    """Run one row in empty working and home directories; the problem, or None when it behaved."""
    with tempfile.TemporaryDirectory() as cwd, tempfile.TemporaryDirectory() as home:
        env = {**base_env, "HOME": home, **row.env}
        try:
            out = subprocess.run(
                [sys.executable, "-m", "workers.cli", *row.argv],
                cwd=cwd, env=env, capture_output=True, text=True, timeout=90,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return "accepted: still running after 90 s"
        created = sorted(os.listdir(cwd)) + sorted(os.listdir(home))
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and not _is_log(ln)]
    problems = []
    if out.returncode != 2:
        problems.append(f"exit status {out.returncode}")
    if len(lines) != 1 or "Traceback" in out.stderr:
        problems.append(f"{len(lines)} lines")
    problems += [f"does not name {n!r}" for n in row.names if n not in "".join(lines)]
    problems += [f"shows {h!r}" for h in row.hidden if h in out.stderr + out.stdout]
    if created:
        problems.append(f"created {created}")
    return f"{'; '.join(problems)}\n    stderr: {out.stderr[-1500:]!r}" if problems else None


def _untouched(root: Path) -> bool:
    return not list(root.iterdir()) and not Path(MISSING_DIR).exists()


def _is_log(line: str) -> bool:
    try:
        return "level" in json.loads(line)
    except ValueError:
        return False


async def test_bad_inputs_are_one_line_exit_2_and_change_nothing(
    redis_url: str, database_url: str, redis_client: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    missing_db = f"streamfill_missing_{uuid.uuid4().hex[:8]}"
    rows = settings_rows(str(tmp_path)) + server_rows(redis_url, database_url, missing_db)
    assert len(rows) >= 30
    base_env = {
        "PATH": os.environ["PATH"],
        "REDIS_URL": redis_url,  # a command that wrongly starts would act here, under `prefix`
        "STREAMFILL_PREFIX": prefix,
        "PYTHONPATH": str(PROJECT),
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(zip(rows, pool.map(lambda r: _run(r, base_env), rows), strict=True))
    failures = [f"{row.id} {' '.join(row.argv)} {row.env}: {problem}" for row, problem in results if problem]
    assert not failures, "\n".join(failures)
    assert await redis_client.keys(f"{prefix}*") == []
    assert _untouched(tmp_path)  # the replayer root given to some rows stays empty
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", missing_db) == 0
    finally:
        await conn.close()
