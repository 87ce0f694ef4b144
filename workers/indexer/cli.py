"""`streamfill indexer`: consume firehose_live, firehose_backfill and label_live into PostgreSQL."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio

from streams import Keys, WorkerOptions, run_worker
from streams.admin import audit
from workers._edge import check_postgres, connect_postgres
from workers._embedded_pg import database_url_or_embedded
from workers._env import redis_session
from workers._errors import EdgeError
from workers._readiness import indexer_checks
from workers._specs import start_live
from workers.control import Agent, LiveSettings
from workers.indexer.config import LIVE_STREAMS, SPEC, IndexerConfig
from workers.indexer.migrate import migrate
from workers.indexer.verify import verify
from workers.indexer.worker import build_indexer
from workers.settings import add_flags

DESCRIPTION = """\
Apply firehose, backfill and label events from Redis streams to PostgreSQL: upserts gated on
each record's repo rev, tombstones for deletes, labels, aggregates. Live events and backfilled
snapshots may arrive in any order, any number of times. Pending schema migrations are applied on
start. Scale it as replicas with stable, unique consumer names."""

EPILOG = """\
examples:
  DATABASE_URL=postgresql://app:secret@db:5432/bsky REDIS_URL=redis://redis:6379/0 streamfill indexer
  streamfill indexer --migrate                 apply pending migrations and exit (a pre-deploy step)
  INDEXER_MODE=label streamfill indexer        only label_live (rsky's modes: all, stream, label)
  streamfill indexer --verify truth.jsonl      compare with devnet's ground truth"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "indexer",
        help="index firehose, backfill and label streams into PostgreSQL",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--migrate", action="store_true", help="apply pending schema migrations and exit")
    p.add_argument(
        "--verify",
        metavar="TRUTH_JSONL",
        type=Path,
        default=None,
        help="compare the database with devnet ground truth (a JSON-lines file), print the verdict, "
        "exit 1 if it differs",
    )
    add_flags(p, SPEC)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    live = start_live(SPEC, args, name="indexer")
    config = live.config
    with database_url_or_embedded(config.database_url) as database_url:
        if args.migrate:
            return anyio.run(run_migrate, database_url, config)
        if args.verify is not None:
            return anyio.run(run_verify, database_url, args.verify)
        return anyio.run(run, config, database_url, live)


async def run(
    config: IndexerConfig, database_url: str, live: LiveSettings[IndexerConfig] | None = None
) -> int:
    await check_postgres(database_url)
    live = live or LiveSettings.fixed(SPEC, config)
    async with redis_session(config.redis_url) as redis:
        agent = Agent(redis, live, kind="indexer", name=config.consumer)
        await agent.start()
        async with build_indexer(redis, database_url, live.config) as indexer:
            live.on_change(indexer.retune)
            live_keys = {Keys(config.prefix).stream(s) for s in LIVE_STREAMS}
            agent.stats = indexer.statistics
            options = WorkerOptions(
                name=config.consumer,
                metrics_port=config.metrics_port,
                metrics_host=config.metrics_host,
                watched_streams=tuple(p for c in indexer.consumers for p in c.partitions),
                grace_s=config.grace_s,
                redis_reconnect_s=config.redis_reconnect_s,
                readiness=indexer_checks(
                    redis,
                    database_url,
                    prefix=config.prefix,
                    partitions=config.partitions,
                    live=[
                        (p, c.config.group)
                        for c in indexer.consumers
                        if c.config.stream in live_keys
                        for p in c.partitions
                    ],
                    max_lag_s=config.ready_max_lag_s,
                ),
            )
            return await run_worker(redis, indexer.consumers, options, helpers=[agent.run])


async def run_migrate(database_url: str, config: IndexerConfig | None = None) -> int:
    conn = await connect_postgres(database_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"streamfill: applied migrations {applied}" if applied else "streamfill: schema is up to date")
    if config is not None and config.redis_url:  # audited where there is a deployment's Redis
        async with redis_session(config.redis_url) as redis:
            await audit(redis, Keys(config.prefix), "indexer.migrate", applied=applied)
    return 0


async def run_verify(database_url: str, truth_path: Path) -> int:
    try:
        with truth_path.open() as f:
            truth = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as exc:
        raise EdgeError(f"--verify {truth_path}: cannot read the ground truth: {exc}") from exc
    conn = await connect_postgres(database_url)
    try:
        verdict = await verify(conn, truth)
    finally:
        await conn.close()
    json.dump(verdict.to_json(), sys.stdout, indent=2)
    print()
    return 0 if verdict.ok else 1
