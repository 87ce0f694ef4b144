"""`streamfill backfiller`: consume repo_backfill, write firehose_backfill."""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from streams import WorkerOptions, run_worker
from workers._env import redis_session
from workers._readiness import base_checks
from workers._specs import start_live
from workers.backfiller.config import SPEC, BackfillerConfig
from workers.backfiller.worker import build_backfiller
from workers.control import Agent, LiveSettings
from workers.settings import add_flags

DESCRIPTION = """\
Consume repo jobs from repo_backfill (consumer group repo_backfill_group): resolve each DID,
download its repo from its PDS (getRepo), verify the commit signature and the MST, and write
every record as a `create` event with seq = -1 to firehose_backfill. Scale it as replicas with
stable, unique consumer names."""

EPILOG = """\
examples:
  REDIS_URL=redis://redis:6379/0 streamfill backfiller
  streamfill backfiller --consumer backfiller-0 --concurrency 16 --pds-rps 5
  BACKFILLER_INPUT_STREAM=repo_backfill BACKFILLER_CONSUMER_GROUP=prod_backfiller streamfill backfiller
                                               (rsky's names are read too)"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "backfiller",
        help="download repos listed in repo_backfill into firehose_backfill",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(p, SPEC)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    live = start_live(SPEC, args, name="backfiller")
    return anyio.run(run, live.config, live)


async def run(config: BackfillerConfig, live: LiveSettings[BackfillerConfig] | None = None) -> int:
    live = live or LiveSettings.fixed(SPEC, config)
    async with redis_session(config.redis_url) as redis:
        agent = Agent(redis, live, kind="backfiller", name=config.consumer)
        await agent.start()
        async with build_backfiller(redis, live.config) as worker:
            live.on_change(worker.retune)
            agent.stats = worker.statistics
            options = WorkerOptions(
                name=config.consumer,
                metrics_port=config.metrics_port,
                metrics_host=config.metrics_host,
                watched_streams=(*worker.consumer.partitions, *worker.producer.partitions),
                grace_s=config.grace_s,
                redis_reconnect_s=config.redis_reconnect_s,
                readiness=base_checks(redis),
            )
            return await run_worker(redis, [worker.consumer], options, helpers=[agent.run])
