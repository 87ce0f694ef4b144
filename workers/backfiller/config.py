"""Backfiller configuration: read once from the environment (rsky-compatible names) or flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from atp.blocks import DEFAULT_MEMORY_BYTES
from streams import default_consumer_name
from workers._env import env_bool, env_str

# 2 GiB: the largest real repos are a few hundred MB; the cap stops hostile servers streaming
# forever (and bounds the temporary file a repo's blocks spill to beyond repo_memory_bytes).
DEFAULT_MAX_REPO_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class BackfillerConfig:
    redis_url: str
    prefix: str
    consumer: str
    group: str
    backfill_stream: str
    firehose_stream: str
    dlq_stream: str
    concurrency: int
    firehose_high_water: int
    batch_size: int
    http_timeout_s: float
    max_retries: int
    pds_rps: float
    pds_concurrency: int
    skip_signature_verification: bool
    plc_url: str
    max_repo_bytes: int
    repo_memory_bytes: int
    metrics_port: int | None
    min_idle_ms: int


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags mirroring the environment variables (a flag wins over its variable)."""
    for flag, help_ in (
        ("--consumer", "BACKFILLER_CONSUMER"),
        ("--group", "BACKFILLER_GROUP"),
        ("--concurrency", "BACKFILLER_CONCURRENCY"),
        ("--batch-size", "BACKFILLER_BATCH_SIZE"),
        ("--pds-rps", "BACKFILLER_PDS_RPS"),
        ("--plc-url", "PLC_URL"),
        ("--max-repo-bytes", "BACKFILLER_MAX_REPO_BYTES"),
        ("--repo-memory-bytes", "BACKFILLER_REPO_MEMORY_BYTES"),
        ("--metrics-port", "METRICS_PORT"),
        ("--high-water-mark", "BACKFILLER_FIREHOSE_STREAM_HIGH_WATER_MARK"),
        ("--redis-url", "REDIS_URL"),
        ("--prefix", "STREAMFILL_PREFIX"),
        ("--backfill-stream", "BACKFILLER_BACKFILL_STREAM"),
        ("--firehose-stream", "BACKFILLER_FIREHOSE_STREAM"),
        ("--dlq-stream", "BACKFILLER_DLQ_STREAM"),
        ("--http-timeout-secs", "BACKFILLER_HTTP_TIMEOUT_SECS"),
        ("--max-retries", "BACKFILLER_MAX_RETRIES"),
        ("--pds-concurrency", "BACKFILLER_PDS_CONCURRENCY"),
        ("--min-idle-ms", "BACKFILLER_MIN_IDLE_MS"),
    ):
        p.add_argument(flag, default=None, help=f"(env {help_})")
    p.add_argument("--skip-signature-verification", action="store_true", default=None)


def from_env(args: argparse.Namespace) -> BackfillerConfig:
    def pick(attr: str, env: str, default: str) -> str:
        value = getattr(args, attr, None)
        return str(value) if value is not None else env_str(env, default)

    metrics = pick("metrics_port", "METRICS_PORT", "")
    return BackfillerConfig(
        redis_url=pick("redis_url", "REDIS_URL", ""),
        prefix=pick("prefix", "STREAMFILL_PREFIX", ""),
        consumer=pick("consumer", "BACKFILLER_CONSUMER", default_consumer_name("backfiller")),
        group=pick("group", "BACKFILLER_GROUP", "repo_backfill_group"),
        backfill_stream=pick("backfill_stream", "BACKFILLER_BACKFILL_STREAM", "repo_backfill"),
        firehose_stream=pick("firehose_stream", "BACKFILLER_FIREHOSE_STREAM", "firehose_backfill"),
        dlq_stream=pick("dlq_stream", "BACKFILLER_DLQ_STREAM", "repo_backfill:dlq"),
        concurrency=int(pick("concurrency", "BACKFILLER_CONCURRENCY", "8")),
        firehose_high_water=int(
            pick("high_water_mark", "BACKFILLER_FIREHOSE_STREAM_HIGH_WATER_MARK", "100000")
        ),
        batch_size=int(pick("batch_size", "BACKFILLER_BATCH_SIZE", "500")),
        http_timeout_s=float(pick("http_timeout_secs", "BACKFILLER_HTTP_TIMEOUT_SECS", "120")),
        max_retries=int(pick("max_retries", "BACKFILLER_MAX_RETRIES", "5")),
        pds_rps=float(pick("pds_rps", "BACKFILLER_PDS_RPS", "10")),
        pds_concurrency=int(pick("pds_concurrency", "BACKFILLER_PDS_CONCURRENCY", "4")),
        skip_signature_verification=bool(args.skip_signature_verification)
        or env_bool("BACKFILLER_SKIP_SIGNATURE_VERIFICATION", False),
        plc_url=pick("plc_url", "PLC_URL", "https://plc.directory"),
        max_repo_bytes=int(pick("max_repo_bytes", "BACKFILLER_MAX_REPO_BYTES", str(DEFAULT_MAX_REPO_BYTES))),
        repo_memory_bytes=int(
            pick("repo_memory_bytes", "BACKFILLER_REPO_MEMORY_BYTES", str(DEFAULT_MEMORY_BYTES))
        ),
        metrics_port=int(metrics) if metrics else None,
        min_idle_ms=int(pick("min_idle_ms", "BACKFILLER_MIN_IDLE_MS", "60000")),
    )
