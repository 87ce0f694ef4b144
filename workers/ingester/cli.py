"""`streamfill ingester [--mode all|backfill|firehose|labeler] [--retry-skipped]`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import anyio

from streams import Keys, WorkerOptions, audit, configure_logging, run_worker
from workers._env import redis_session
from workers.ingester.config import IngesterConfig, add_arguments, from_env
from workers.ingester.worker import build_ingester

log = logging.getLogger("streamfill.ingester")


def register(sub: Any) -> None:
    p = sub.add_parser("ingester", help="list relays into repo_backfill; follow firehoses and labelers")
    add_arguments(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    config = from_env(args)
    if not config.relay_hosts and not config.labeler_hosts:
        print("streamfill: no INGESTER_RELAY_HOSTS / INGESTER_LABELER_HOSTS configured", file=sys.stderr)
        return 2
    configure_logging("ingester")
    return anyio.run(retry_skipped if config.retry_skipped else run, config)


async def run(config: IngesterConfig) -> int:
    async with redis_session(config.redis_url or None) as redis, build_ingester(redis, config) as ingester:
        keys = Keys(config.prefix)
        watched = tuple(keys.stream(s) for s in ("repo_backfill", "firehose_live", "label_live"))
        options = WorkerOptions(name="ingester", metrics_port=config.metrics_port, watched_streams=watched)
        return await run_worker(redis, ingester.components, options)


async def retry_skipped(config: IngesterConfig) -> int:
    """Re-page every skipped listRepos range; exit 1 if some range still fails."""
    failing_total = 0
    async with redis_session(config.redis_url or None) as redis, build_ingester(redis, config) as ingester:
        for listing in ingester.listings:
            recovered, failing = await listing.retry_skipped()
            failing_total += failing
            await audit(
                redis,
                Keys(config.prefix),
                "ingester.retry_skipped",
                host=listing.host,
                recovered=recovered,
                failing=failing,
            )
            print(f"{listing.host}: {recovered} skipped range(s) recovered, {failing} still failing")
    return 1 if failing_total else 0
