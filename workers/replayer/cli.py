"""`streamfill replayer scan|index|run|run-once|status`: replay Captain's Log files into Elasticsearch."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
import redis.asyncio as aioredis

from streams import Component, Keys, WorkerOptions, configure_logging, run_worker
from workers._env import redis_session
from workers.replayer.config import ReplayerConfig, add_arguments, from_env
from workers.replayer.ledger import LedgerBusy
from workers.replayer.loops import OnceResult, PeriodicScan, RunOnce
from workers.replayer.service import build_indexing, build_scanning, elastic, scanning_ledger
from workers.replayer.status import show_status


def register(sub: Any) -> None:
    p = sub.add_parser("replayer", help="replay Captain's Log files into Elasticsearch")
    roles = p.add_subparsers(dest="role", metavar="ROLE")
    roles.required = True
    scan = roles.add_parser("scan", help="enqueue files not yet indexed into the captains_log stream")
    scan.add_argument(
        "--every",
        type=float,
        default=None,
        metavar="S",
        help="keep scanning every S seconds instead of one pass",
    )
    roles.add_parser("index", help="index captains_log entries into Elasticsearch (scale as replicas)")
    roles.add_parser("run", help="both roles in one process, a pass at start-up and every REPLAYER_INTERVAL")
    once = roles.add_parser("run-once", help="one complete pass: scan, index everything, print a summary")
    once.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up (exit 1, nothing lost) when not finished after S seconds",
    )
    once.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    status = roles.add_parser("status", help="runs, and failed files with their errors, from the ledger")
    status.add_argument("--summary", action="store_true", help="every run, one line each")
    status.add_argument("--failed", action="store_true", help="failed files, errors and retry counts")
    status.add_argument("--run-id", type=int, default=None, help="one run and its failed files")
    status.add_argument("--json", action="store_true")
    for parser in (scan, roles.choices["index"], roles.choices["run"], once, status):
        add_arguments(parser)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    config = from_env(args)
    if args.role == "status":
        return show_status(
            config, summary=args.summary, failed=args.failed, run_id=args.run_id, as_json=args.json
        )
    configure_logging(f"replayer-{args.role}")
    try:
        return anyio.run(_ROLES[args.role], config, args)
    except LedgerBusy as exc:
        print(f"streamfill replayer: {exc}", file=sys.stderr)
        return 2


async def run_index(config: ReplayerConfig, args: argparse.Namespace) -> int:
    async with redis_session(config.redis_url or None) as redis, elastic(config) as es:
        indexing = build_indexing(redis, config, es)
        return await _run(redis, config, [indexing.consumer], config.consumer)


async def run_scan(config: ReplayerConfig, args: argparse.Namespace) -> int:
    async with redis_session(config.redis_url or None) as redis:
        with scanning_ledger(config) as ledger:
            scanning = build_scanning(redis, config, ledger)
            loop = PeriodicScan(
                redis, config, scanning, es=None, interval_s=args.every, after=[scanning.folder_consumer]
            )
            return await _run(redis, config, [scanning.folder_consumer, loop], config.consumer)


async def run_both(config: ReplayerConfig, args: argparse.Namespace) -> int:
    async with redis_session(config.redis_url or None) as redis, elastic(config) as es:
        with scanning_ledger(config) as ledger:
            indexing = build_indexing(redis, config, es)
            scanning = build_scanning(redis, config, ledger)
            loop = PeriodicScan(redis, config, scanning, es=es, interval_s=config.interval_s)
            components: list[Component] = [indexing.consumer, scanning.folder_consumer, loop]
            return await _run(redis, config, components, config.consumer)


async def run_once(config: ReplayerConfig, args: argparse.Namespace) -> int:
    async with redis_session(config.redis_url or None) as redis, elastic(config) as es:
        with scanning_ledger(config) as ledger:
            indexing = build_indexing(redis, config, es)
            scanning = build_scanning(redis, config, ledger)
            once = RunOnce(
                redis,
                config,
                scanning,
                indexing.handler,
                timeout_s=args.timeout,
                after=[indexing.consumer, scanning.folder_consumer],
            )
            await _run(redis, config, [indexing.consumer, scanning.folder_consumer, once], config.consumer)
    assert once.result is not None
    _print_summary(once.result, as_json=args.json)
    return once.result.status


async def _run(redis: aioredis.Redis, config: ReplayerConfig, components: list[Component], name: str) -> int:
    keys = Keys(config.prefix)
    watched = (keys.stream(config.stream), keys.stream(config.results_stream))
    options = WorkerOptions(name=name, metrics_port=config.metrics_port, watched_streams=watched)
    return await run_worker(redis, components, options)


_ROLES = {"index": run_index, "scan": run_scan, "run": run_both, "run-once": run_once}


def _print_summary(result: OnceResult, *, as_json: bool) -> None:
    run = result.run
    summary = {
        "ok": result.status == 0,
        "run": run.get("id"),
        "status": run.get("status"),
        "files_scanned": run.get("files_scanned", 0),
        "enqueued_count": run.get("enqueued_count", 0),
        "awaited_count": result.report.awaited if result.report else 0,
        "indexed_count": result.indexed,
        "failed_count": result.failed,
        "skipped_count": run.get("skipped_count", 0),
        "outstanding": result.outstanding,
        "reason": result.reason,
    }
    if as_json:
        print(json.dumps(summary))
    else:
        print(
            f"replay run {summary['run']}: {summary['files_scanned']} files scanned, "
            f"{summary['enqueued_count']} enqueued, {summary['indexed_count']} indexed, "
            f"{summary['failed_count']} failed, {summary['skipped_count']} skipped"
            + (f", {summary['awaited_count']} awaited from earlier runs" if summary["awaited_count"] else "")
        )
    if result.status:
        print(f"streamfill replayer: {result.reason}", file=sys.stderr)
