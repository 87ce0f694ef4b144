"""Ingester configuration: rsky-compatible environment names, each also a flag."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from workers._env import env_bool, env_float, env_int, env_list, env_str

MODES = ("all", "backfill", "firehose", "labeler")


@dataclass(frozen=True)
class IngesterConfig:
    redis_url: str
    prefix: str
    mode: str
    relay_hosts: tuple[str, ...]
    labeler_hosts: tuple[str, ...]
    high_water_mark: int
    batch_size: int
    batch_timeout_ms: int
    max_consecutive_errors: int
    skip_ahead: int
    metrics_port: int | None
    plc_url: str
    verify_signatures: bool
    # How often a finished listing looks for accounts created after its last cursor (rsky: 5 min).
    recheck_interval_s: float = 300.0
    list_limit: int = 1000
    retry_skipped: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", default=None, help="(env REDIS_URL; none: embedded Valkey)")
    p.add_argument("--prefix", default=None, help="key prefix (env STREAMFILL_PREFIX)")
    p.add_argument(
        "--list-limit", type=int, default=None, help="listRepos page size (env INGESTER_LIST_LIMIT, 1000)"
    )
    p.add_argument(
        "--no-verify-signatures",
        action="store_true",
        help="skip firehose commit signatures (env INGESTER_VERIFY_SIGNATURES=false)",
    )
    p.add_argument("--mode", choices=MODES, default=None, help="(env INGESTER_MODE, default all)")
    p.add_argument("--relay-hosts", default=None, help="comma-separated (env INGESTER_RELAY_HOSTS)")
    p.add_argument("--labeler-hosts", default=None, help="comma-separated (env INGESTER_LABELER_HOSTS)")
    p.add_argument("--high-water-mark", type=int, default=None, help="(env INGESTER_HIGH_WATER_MARK, 100000)")
    p.add_argument("--batch-size", type=int, default=None, help="(env INGESTER_BATCH_SIZE, 500)")
    p.add_argument("--batch-timeout-ms", type=int, default=None, help="(env INGESTER_BATCH_TIMEOUT_MS, 1000)")
    p.add_argument(
        "--max-consecutive-errors", type=int, default=None, help="(env INGESTER_MAX_CONSECUTIVE_ERRORS, 5)"
    )
    p.add_argument("--skip-ahead", type=int, default=None, help="(env INGESTER_SKIP_AHEAD, 1000)")
    p.add_argument("--metrics-port", type=int, default=None, help="(env METRICS_PORT)")
    p.add_argument("--plc-url", default=None, help="(env PLC_URL) for firehose signature checks")
    p.add_argument(
        "--recheck-interval", type=float, default=None, help="seconds (env INGESTER_RECHECK_SECS, 300)"
    )
    p.add_argument(
        "--retry-skipped",
        action="store_true",
        help="re-page the listRepos ranges recorded in the skip ledger, then exit",
    )


def from_env(args: argparse.Namespace) -> IngesterConfig:
    def pick(value: object, env: str, default: int) -> int:
        return int(value) if value is not None else env_int(env, default)  # type: ignore[call-overload]

    mode = args.mode or env_str("INGESTER_MODE", "all")
    if mode not in MODES:
        raise SystemExit(f"streamfill: INGESTER_MODE must be one of {', '.join(MODES)}, got {mode!r}")
    relays = tuple(h for h in (args.relay_hosts or "").split(",") if h) or env_list("INGESTER_RELAY_HOSTS")
    labelers = tuple(h for h in (args.labeler_hosts or "").split(",") if h) or env_list(
        "INGESTER_LABELER_HOSTS"
    )
    metrics = args.metrics_port if args.metrics_port is not None else env_int("METRICS_PORT", -1)
    recheck = (
        args.recheck_interval
        if args.recheck_interval is not None
        else env_float("INGESTER_RECHECK_SECS", 300.0)
    )
    return IngesterConfig(
        redis_url=args.redis_url or env_str("REDIS_URL"),
        prefix=args.prefix if args.prefix is not None else env_str("STREAMFILL_PREFIX"),
        mode=mode,
        relay_hosts=relays,
        labeler_hosts=labelers,
        high_water_mark=pick(args.high_water_mark, "INGESTER_HIGH_WATER_MARK", 100_000),
        batch_size=pick(args.batch_size, "INGESTER_BATCH_SIZE", 500),
        batch_timeout_ms=pick(args.batch_timeout_ms, "INGESTER_BATCH_TIMEOUT_MS", 1000),
        max_consecutive_errors=pick(args.max_consecutive_errors, "INGESTER_MAX_CONSECUTIVE_ERRORS", 5),
        skip_ahead=pick(args.skip_ahead, "INGESTER_SKIP_AHEAD", 1000),
        metrics_port=None if metrics < 0 else metrics,
        plc_url=args.plc_url or env_str("PLC_URL", "https://plc.directory"),
        verify_signatures=not args.no_verify_signatures and env_bool("INGESTER_VERIFY_SIGNATURES", True),
        recheck_interval_s=recheck,
        retry_skipped=bool(args.retry_skipped),
        list_limit=pick(args.list_limit, "INGESTER_LIST_LIMIT", 1000),
    )
