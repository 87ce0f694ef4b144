"""Replayer configuration: read once from the environment (`REPLAYER_*`, `ES_URL`) or flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from streams import default_consumer_name
from workers._env import env_str

# Elasticsearch's own guidance: bulk requests of a few MB; 5 MB stays far below the default
# http.max_content_length (100 MB) even for unusually large log entries.
DEFAULT_BULK_MAX_BYTES = 5 * 1024 * 1024

N = TypeVar("N", int, float)


@dataclass(frozen=True)
class ReplayerConfig:
    redis_url: str
    prefix: str
    es_url: str
    es_api_key: str
    root: Path
    state_dir: Path
    consumer: str
    group: str
    ledger_group: str
    stream: str
    results_stream: str
    interval_s: float
    max_retries: int
    cleanup_days: float
    bulk_max_docs: int
    bulk_max_bytes: int
    concurrency: int
    high_water: int
    es_timeout_s: float
    max_deliveries: int
    min_idle_ms: int
    metrics_port: int | None

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "replayer.sqlite3"

    @property
    def checkpoint_path(self) -> Path:
        return self.root / "es_backfill_checkpoint.json"


# (flag, environment variable, default, help)
_SETTINGS: tuple[tuple[str, str, str, str], ...] = (
    ("--redis-url", "REDIS_URL", "", "Redis/Valkey URL; empty starts an embedded Valkey"),
    ("--prefix", "STREAMFILL_PREFIX", "", "key prefix of every stream"),
    ("--es-url", "ES_URL", "http://127.0.0.1:9200", "Elasticsearch URL (user:password@ allowed)"),
    ("--es-api-key", "ES_API_KEY", "", "Elasticsearch API key (sent as `Authorization: ApiKey`)"),
    ("--root", "REPLAYER_ROOT", "telemetry/captains_log", "Captain's Log directory"),
    ("--state-dir", "REPLAYER_STATE_DIR", ".replayer", "directory of the SQLite ledger"),
    ("--consumer", "REPLAYER_CONSUMER", "", "consumer name (default replayer-<hostname>)"),
    ("--group", "REPLAYER_GROUP", "es_group", "consumer group of the index role"),
    ("--ledger-group", "REPLAYER_LEDGER_GROUP", "ledger_group", "group reading results"),
    ("--stream", "REPLAYER_STREAM", "captains_log", "stream of documents to index"),
    ("--results-stream", "REPLAYER_RESULTS_STREAM", "captains_log_results", "results stream"),
    ("--interval", "REPLAYER_INTERVAL", "600", "seconds between replay passes (`run`)"),
    ("--max-retries", "REPLAYER_MAX_RETRIES", "3", "passes that retry a failed file"),
    ("--cleanup-days", "REPLAYER_CLEANUP_DAYS", "7", "runs older than this are deleted"),
    ("--bulk-max-docs", "REPLAYER_BULK_MAX_DOCS", "500", "documents per _bulk request"),
    ("--bulk-max-bytes", "REPLAYER_BULK_MAX_BYTES", str(DEFAULT_BULK_MAX_BYTES), "bytes per _bulk"),
    ("--concurrency", "REPLAYER_CONCURRENCY", "2", "concurrent _bulk requests per index process"),
    ("--high-water-mark", "REPLAYER_STREAM_HIGH_WATER_MARK", "20000", "scan blocks above this"),
    ("--es-timeout-secs", "REPLAYER_ES_TIMEOUT_SECS", "30", "timeout of one Elasticsearch call"),
    ("--max-deliveries", "REPLAYER_MAX_DELIVERIES", "5", "deliveries before dead-lettering"),
    ("--min-idle-ms", "REPLAYER_MIN_IDLE_MS", "60000", "idle time before another replica reclaims"),
    ("--metrics-port", "METRICS_PORT", "", "serve /metrics, /healthz, /readyz on this port"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags mirroring the environment variables (a flag wins over its variable)."""
    for flag, env, default, help_ in _SETTINGS:
        shown = f", default {default}" if default else ""
        p.add_argument(flag, default=None, help=f"{help_} (env {env}{shown})")


def from_env(args: argparse.Namespace) -> ReplayerConfig:
    values: dict[str, str] = {}
    for flag, env, default, _ in _SETTINGS:
        attr = flag.lstrip("-").replace("-", "_")
        given = getattr(args, attr, None)
        values[attr] = str(given) if given is not None else env_str(env, default)
    try:
        return _build(values)
    except ValueError as exc:
        raise SystemExit(f"streamfill replayer: invalid setting: {exc}") from None


def _build(v: dict[str, str]) -> ReplayerConfig:
    return ReplayerConfig(
        redis_url=v["redis_url"],
        prefix=v["prefix"],
        es_url=v["es_url"].rstrip("/"),
        es_api_key=v["es_api_key"],
        root=Path(v["root"]),
        state_dir=Path(v["state_dir"]),
        consumer=v["consumer"] or default_consumer_name("replayer"),
        group=v["group"],
        ledger_group=v["ledger_group"],
        stream=v["stream"],
        results_stream=v["results_stream"],
        interval_s=_positive(float(v["interval"]), "REPLAYER_INTERVAL"),
        max_retries=int(v["max_retries"]),
        cleanup_days=float(v["cleanup_days"]),
        bulk_max_docs=_positive(int(v["bulk_max_docs"]), "REPLAYER_BULK_MAX_DOCS"),
        bulk_max_bytes=_positive(int(v["bulk_max_bytes"]), "REPLAYER_BULK_MAX_BYTES"),
        concurrency=_positive(int(v["concurrency"]), "REPLAYER_CONCURRENCY"),
        high_water=int(v["high_water_mark"]),
        es_timeout_s=_positive(float(v["es_timeout_secs"]), "REPLAYER_ES_TIMEOUT_SECS"),
        max_deliveries=_positive(int(v["max_deliveries"]), "REPLAYER_MAX_DELIVERIES"),
        min_idle_ms=_positive(int(v["min_idle_ms"]), "REPLAYER_MIN_IDLE_MS"),
        metrics_port=int(v["metrics_port"]) if v["metrics_port"] else None,
    )


def _positive(value: N, name: str) -> N:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value
