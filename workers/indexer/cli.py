"""`streamfill indexer`: consume firehose_live, firehose_backfill and label_live into PostgreSQL."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from streams import WorkerOptions, configure_logging, run_worker
from workers._embedded_pg import database_url_or_embedded
from workers._env import redis_session
from workers.indexer.config import IndexerConfig, add_arguments, from_env
from workers.indexer.migrate import migrate
from workers.indexer.verify import verify
from workers.indexer.worker import build_indexer


def register(sub: Any) -> None:
    p = sub.add_parser("indexer", help="index firehose, backfill and label streams into PostgreSQL")
    add_arguments(p)
    p.add_argument("--migrate", action="store_true", help="apply pending schema migrations and exit")
    p.add_argument("--verify", metavar="TRUTH_JSONL", type=Path, default=None,
                   help="compare the database with devnet ground truth, print the verdict, exit 1 if wrong")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    config = from_env(args)
    configure_logging("indexer")
    with database_url_or_embedded(config.database_url) as database_url:
        if args.migrate:
            return anyio.run(run_migrate, database_url)
        if args.verify is not None:
            return anyio.run(run_verify, database_url, args.verify)
        return anyio.run(run, config, database_url)


async def run(config: IndexerConfig, database_url: str) -> int:
    async with (
        redis_session(config.redis_url) as redis,
        build_indexer(redis, database_url, config) as indexer,
    ):
        options = WorkerOptions(
            name=config.consumer,
            metrics_port=config.metrics_port,
            watched_streams=tuple(c.config.stream for c in indexer.consumers),
        )
        return await run_worker(redis, indexer.consumers, options)


async def run_migrate(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"streamfill: applied migrations {applied}" if applied else "streamfill: schema is up to date")
    return 0


async def run_verify(database_url: str, truth_path: Path) -> int:
    with truth_path.open() as f:
        truth = [json.loads(line) for line in f if line.strip()]
    conn = await asyncpg.connect(database_url)
    try:
        verdict = await verify(conn, truth)
    finally:
        await conn.close()
    json.dump(verdict.to_json(), sys.stdout, indent=2)
    print()
    return 0 if verdict.ok else 1
