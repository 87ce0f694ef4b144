"""`streamfill ingester [--mode all|backfill|firehose|labeler] [--retry-skipped]`."""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from streams import Keys, StreamNames, WorkerOptions, host_key, run_worker
from streams.admin import audit
from workers._env import redis_session
from workers._partitions import partitioning
from workers._readiness import base_checks
from workers._specs import start_live
from workers.control import Agent, LiveSettings
from workers.ingester.config import SPEC, IngesterConfig
from workers.ingester.worker import Ingester, build_ingester
from workers.settings import add_flags

DESCRIPTION = """\
List every repo of the relays into repo_backfill (the relays' listRepos, and each PDS host of
their listHosts: INGESTER_DISCOVERY; paged, resumable, each repo enqueued once per rev), and
follow the relays' firehoses into firehose_live and the labelers into label_live. Each cursor is written in
the same atomic step as the entries it covers. Run exactly one ingester per relay."""

EPILOG = """\
examples:
  INGESTER_RELAY_HOSTS=https://bsky.network INGESTER_LABELER_HOSTS=https://mod.bsky.app \\
    streamfill ingester
  streamfill ingester --mode backfill --relay-hosts https://bsky.network --list-limit 500
  streamfill ingester --retry-skipped          re-page the listRepos ranges skipped after errors
  streamfill ingester --relist                 forget what was listed: the next start re-lists all"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ingester",
        help="list relays into repo_backfill; follow firehoses and labelers",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--relist",
        action="store_true",
        help="forget what was listed (the listed register) and every listing cursor, then exit: the "
        "next start lists every repo again (stop the ingester first)",
    )
    p.add_argument(
        "--retry-skipped",
        action="store_true",
        help="re-page the listRepos ranges recorded in the skip ledger, then exit (1 if one still fails)",
    )
    add_flags(p, SPEC)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    live = start_live(SPEC, args, name="ingester")
    if args.relist or args.retry_skipped:
        return anyio.run(relist if args.relist else retry_skipped, live.config)
    return anyio.run(run, live.config, live)


async def run(config: IngesterConfig, live: LiveSettings[IngesterConfig] | None = None) -> int:
    live = live or LiveSettings.fixed(SPEC, config)
    async with redis_session(config.redis_url) as redis:
        agent = Agent(redis, live, kind="ingester", name="ingester")
        await agent.start()
        async with build_ingester(redis, live.config) as ingester:
            live.on_change(ingester.retune)
            agent.stats = lambda: {
                "producers": [p.statistics() for p in ingester.producers],
                "throttle": ingester.throttle.statistics() if ingester.throttle is not None else None,
            }
            return await _run(redis, config, ingester, agent)


async def _run(redis: Any, config: IngesterConfig, ingester: Ingester, agent: Agent) -> int:
    parts = partitioning(config.prefix, config.partitions)
    written = (StreamNames.REPO_BACKFILL, StreamNames.FIREHOSE_LIVE, StreamNames.LABEL_LIVE)
    watched = tuple(p for s in written for p in parts.partition_keys(s))
    options = WorkerOptions(
        name="ingester",
        metrics_port=config.metrics_port,
        metrics_host=config.metrics_host,
        watched_streams=watched,
        grace_s=config.grace_s,
        redis_reconnect_s=config.redis_reconnect_s,
        readiness=base_checks(redis),
    )
    return await run_worker(redis, ingester.components, options, helpers=[agent.run])


async def retry_skipped(config: IngesterConfig) -> int:
    """Re-page every skipped listRepos range; exit 1 if some range still fails."""
    failing_total = 0
    async with redis_session(config.redis_url) as redis, build_ingester(redis, config) as ingester:
        listings = list(ingester.listings)
        for discovery in ingester.discoveries:
            listings += [discovery.source(host.hostname) for host in await discovery.known_hosts()]
        for listing in listings:
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


async def relist(config: IngesterConfig) -> int:
    """Delete the listed register and the listing cursors of every relay and discovered host."""
    keys = Keys(config.prefix)
    async with redis_session(config.redis_url) as redis, build_ingester(redis, config) as ingester:
        buckets = 0
        batch: list[bytes] = []
        for pattern in (keys.listed_pattern(StreamNames.REPO_BACKFILL), keys.listed_partitions_pattern()):
            async for key in redis.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    buckets += await redis.unlink(*batch)
                    batch.clear()
        if batch:
            buckets += await redis.unlink(*batch)
        hosts = [host_key(relay) for relay in config.relay_hosts]
        for discovery in ingester.discoveries:
            hosts += [host.hostname for host in await discovery.known_hosts()]
        listings = [keys.cursor(StreamNames.REPO_BACKFILL, h) for h in hosts]
        cursors = await redis.delete(*listings) if listings else 0
        await audit(redis, keys, "ingester.relist", buckets=buckets, cursors=cursors)
    print(f"forgot {buckets} listed-register bucket(s) and {cursors} listing cursor(s)")
    return 0
