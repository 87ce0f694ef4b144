"""`streamfill backfiller`: consume repo_backfill, write firehose_backfill."""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from streams import WorkerOptions, configure_logging, run_worker
from workers._env import redis_session
from workers.backfiller.config import BackfillerConfig, add_arguments, from_env
from workers.backfiller.worker import build_backfiller


def register(sub: Any) -> None:
    p = sub.add_parser("backfiller", help="download repos listed in repo_backfill into firehose_backfill")
    add_arguments(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    config = from_env(args)
    configure_logging("backfiller")
    return anyio.run(run, config)


async def run(config: BackfillerConfig) -> int:
    async with redis_session(config.redis_url or None) as redis, build_backfiller(redis, config) as worker:
        options = WorkerOptions(
            name=config.consumer,
            metrics_port=config.metrics_port,
            watched_streams=(worker.consumer.config.stream, worker.producer.config.stream),
        )
        return await run_worker(redis, [worker.consumer], options)
