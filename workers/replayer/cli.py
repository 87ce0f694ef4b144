"""`streamfill replayer scan|index|run|run-once|status`: replay Captain's Log files into Elasticsearch."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import anyio
import redis.asyncio as aioredis

from streams import Component, Keys, WorkerOptions, run_worker
from streams.admin import audit
from workers._env import redis_session
from workers._readiness import base_checks
from workers._specs import load, start_live
from workers.control import Agent, LiveSettings
from workers.replayer.config import SPEC, ReplayerConfig
from workers.replayer.ledger import LedgerBusy
from workers.replayer.loops import OnceResult, PeriodicScan, RunOnce
from workers.replayer.service import (
    Indexing,
    Scanning,
    build_indexing,
    build_scanning,
    elastic,
    scanning_ledger,
)
from workers.replayer.status import show_status
from workers.settings import add_flags, positive_integer, positive_number

DESCRIPTION = """\
Make Captain's Log indexing into Elasticsearch eventually consistent: find the log files (under
REPLAYER_ROOT) that are not yet indexed, enqueue them into the captains_log stream, index them by
id into daily indices with `_bulk`, and record every result in a resumable SQLite ledger."""

EPILOG = """\
examples:
  REPLAYER_ROOT=/data/telemetry/captains_log ES_URL=http://es:9200 streamfill replayer run-once
  streamfill replayer run --interval 600       a pass at start-up and every 10 minutes
  streamfill replayer index                    index replicas (scale them); with `scan --every 60`
  streamfill replayer status --failed          failed files with their errors"""

ROLES = {
    "scan": "enqueue the files not yet indexed into the captains_log stream",
    "index": "index captains_log entries into Elasticsearch (scale as replicas)",
    "run": "both roles in one process: a pass at start-up and every REPLAYER_INTERVAL",
    "run-once": "one complete pass: scan, index everything, print a summary",
    "status": "runs, and failed files with their errors, from the ledger (read-only)",
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replayer",
        help="replay Captain's Log files into Elasticsearch",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    roles = p.add_subparsers(dest="role", metavar="ROLE", title="roles", help="what this process does")
    roles.required = True
    parsers = {name: roles.add_parser(name, help=text, description=text) for name, text in ROLES.items()}
    parsers["scan"].add_argument(
        "--every",
        type=positive_number,
        default=None,
        metavar="S",
        help="keep scanning every S seconds (default: one pass, then exit)",
    )
    once = parsers["run-once"]
    once.add_argument(
        "--timeout",
        type=positive_number,
        default=None,
        metavar="S",
        help="give up (exit 1, nothing lost) when not finished after S seconds (default: no limit)",
    )
    once.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    status = parsers["status"]
    status.add_argument("--summary", action="store_true", help="every run, one line each")
    status.add_argument("--failed", action="store_true", help="failed files, errors and retry counts")
    status.add_argument(
        "--run-id", type=positive_integer, default=None, metavar="N", help="one run and its failed files"
    )
    status.add_argument("--json", action="store_true", help="print the report as one JSON object")
    for name, parser in parsers.items():
        add_flags(parser, SPEC, role=name)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.role == "status":
        config = load(SPEC, args, role="status").config
        return show_status(
            config, summary=args.summary, failed=args.failed, run_id=args.run_id, as_json=args.json
        )
    live = start_live(SPEC, args, name=f"replayer-{args.role}", role=args.role)
    try:
        return anyio.run(_ROLES[args.role], live.config, args, live)
    except LedgerBusy as exc:
        print(f"streamfill replayer: {exc}", file=sys.stderr)
        return 2


Live = LiveSettings[ReplayerConfig] | None
Tune = Callable[[ReplayerConfig], None]


def _tune_indexing(indexing: Indexing) -> Tune:
    def tune(c: ReplayerConfig) -> None:
        indexing.consumer.retune(batch_size=c.bulk_max_docs)
        indexing.handler.retune(max_docs=c.bulk_max_docs, max_bytes=c.bulk_max_bytes)

    return tune


def _tune_scanning(scanning: Scanning, loop: PeriodicScan | None = None) -> Tune:
    def tune(c: ReplayerConfig) -> None:
        scanning.producer.retune(high_water=c.high_water, low_water=None)
        if loop is not None:
            loop.retune(c.interval_s)

    return tune


async def run_index(config: ReplayerConfig, args: argparse.Namespace, live: Live = None) -> int:
    async with redis_session(config.redis_url) as redis, elastic(config) as es:
        indexing = build_indexing(redis, config, es)
        return await _run(redis, config, [indexing.consumer], live, [_tune_indexing(indexing)])


async def run_scan(config: ReplayerConfig, args: argparse.Namespace, live: Live = None) -> int:
    async with redis_session(config.redis_url) as redis:
        with scanning_ledger(config) as ledger:
            scanning = build_scanning(redis, config, ledger)
            loop = PeriodicScan(
                redis,
                config,
                scanning.scanner,
                scanning.runs,
                es=None,
                interval_s=args.every,
                after=[scanning.folder_consumer],
            )
            await audit(redis, Keys(config.prefix), "replayer.scan", every=args.every)
            return await _run(
                redis, config, [scanning.folder_consumer, loop], live, [_tune_scanning(scanning)]
            )


async def run_both(config: ReplayerConfig, args: argparse.Namespace, live: Live = None) -> int:
    async with redis_session(config.redis_url) as redis, elastic(config) as es:
        with scanning_ledger(config) as ledger:
            indexing = build_indexing(redis, config, es)
            scanning = build_scanning(redis, config, ledger)
            loop = PeriodicScan(
                redis, config, scanning.scanner, scanning.runs, es=es, interval_s=config.interval_s
            )
            components: list[Component] = [indexing.consumer, scanning.folder_consumer, loop]
            await audit(redis, Keys(config.prefix), "replayer.run", interval_s=config.interval_s)
            tunes = [_tune_indexing(indexing), _tune_scanning(scanning, loop)]
            return await _run(redis, config, components, live, tunes)


async def run_once(config: ReplayerConfig, args: argparse.Namespace, live: Live = None) -> int:
    async with redis_session(config.redis_url) as redis, elastic(config) as es:
        with scanning_ledger(config) as ledger:
            indexing = build_indexing(redis, config, es)
            scanning = build_scanning(redis, config, ledger)
            once = RunOnce(
                redis,
                config,
                scanning.scanner,
                scanning.runs,
                indexing.handler,
                timeout_s=args.timeout,
                after=[indexing.consumer, scanning.folder_consumer],
            )
            components: list[Component] = [indexing.consumer, scanning.folder_consumer, once]
            await _run(redis, config, components, live, [_tune_indexing(indexing), _tune_scanning(scanning)])
        assert once.result is not None
        summary = _summary(once.result)
        await audit(redis, Keys(config.prefix), "replayer.run_once", **summary)
    _print_summary(summary, once.result, as_json=args.json)
    return once.result.status


async def _run(
    redis: aioredis.Redis, config: ReplayerConfig, components: list[Component], live: Live, tunes: list[Tune]
) -> int:
    """Run `components` with the control agent: live overrides reach them through `tunes`."""
    keys = Keys(config.prefix)
    live = live or LiveSettings.fixed(SPEC, config)
    for tune in tunes:
        live.on_change(tune)
    agent = Agent(redis, live, kind="replayer", name=config.consumer)
    agent.stats = lambda: {"components": [c.statistics() for c in components if hasattr(c, "statistics")]}
    await agent.start()
    watched = (keys.stream(config.stream), keys.stream(config.results_stream))
    options = WorkerOptions(
        name=config.consumer,
        metrics_port=config.metrics_port,
        metrics_host=config.metrics_host,
        watched_streams=watched,
        grace_s=config.grace_s,
        redis_reconnect_s=config.redis_reconnect_s,
        readiness=base_checks(redis),
    )
    return await run_worker(redis, components, options, helpers=[agent.run])


_ROLES = {"index": run_index, "scan": run_scan, "run": run_both, "run-once": run_once}


def _summary(result: OnceResult) -> dict[str, Any]:
    run = result.run
    return {
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


def _print_summary(summary: dict[str, Any], result: OnceResult, *, as_json: bool) -> None:
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
