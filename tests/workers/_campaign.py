"""Running backfill campaigns in tests: plan in-process, apply while a backfiller and an indexer
run in the same event loop, against a devnet, Redis and a schema of the test's own."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis

from devnet import Devnet
from streams import Keys
from tests.workers._pipeline import backfiller_config
from workers.backfiller.worker import build_backfiller
from workers.campaign.actions import Context, plan_campaign
from workers.campaign.apply import Applier
from workers.campaign.config import CampaignConfig
from workers.campaign.state import CampaignStore
from workers.indexer import IndexerHandler
from workers.indexer.config import IndexerConfig
from workers.indexer.worker import build_consumers


def config(redis_url: str, prefix: str, net: Devnet) -> CampaignConfig:
    return CampaignConfig(
        redis_url=redis_url,
        prefix=prefix,
        relay_hosts=(net.relay_url,),
        plc_url=net.plc_url,
        allow_private_hosts=True,
    )


def context(redis: aioredis.Redis, pool: Any, cfg: CampaignConfig) -> Context:
    return Context(cfg, CampaignStore(redis, Keys(cfg.prefix)), pool)


async def plan(ctx: Context, name: str, out: Path, scope: str = "all", **options: Any) -> None:
    """`streamfill campaign plan NAME --scope SCOPE --out OUT ...`, in-process."""
    args = {
        "name": name,
        "scope": scope,
        "stages": "100%",
        "rate": "60000/min",
        "undo": False,
        "out": out,
        "sample": 2,
        "pass_mark": 0.85,
    } | options
    assert await plan_campaign(ctx, argparse.Namespace(**args)) == 0


async def apply_with_pipeline(
    ctx: Context, redis: aioredis.Redis, redis_url: str, pool: Any, net: Devnet, name: str, echo: list[str]
) -> int:
    """Run `apply` until it halts, with a backfiller and the indexer consumers running beside it."""
    prefix = ctx.store.keys.prefix
    indexer = IndexerConfig(prefix=prefix, streams=("firehose_live", "firehose_backfill"), batch_size=200)
    async with build_backfiller(redis, backfiller_config(redis_url, prefix, net.plc_url)) as backfiller:
        consumers = [backfiller.consumer, *build_consumers(redis, indexer, IndexerHandler(pool))]
        async with anyio.create_task_group() as tg:
            for consumer in consumers:
                await tg.start(consumer.run)
            code = await Applier(ctx.store, pool, name, echo=echo.append).run()
            for consumer in consumers:
                consumer.stop()
    return code
