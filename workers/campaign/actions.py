"""What each `streamfill campaign` operation does, given its `Context` (cli.py parses and connects)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from streams import Keys
from workers._throttle import live_keys, live_throttle
from workers.campaign import plan as planning
from workers.campaign.apply import Applier, dry_run
from workers.campaign.config import CampaignConfig
from workers.campaign.discover import network, read_did_file
from workers.campaign.state import (
    ABORTED,
    ACTIVE,
    AWAITING,
    COMPLETED,
    PAUSED,
    PLANNED,
    REJECTED,
    RUNNING,
    Campaign,
    CampaignError,
    CampaignStore,
)

Action = Callable[["Context", argparse.Namespace], Awaitable[int]]


class Context:
    """What an action needs: the store, and PostgreSQL when the action reads it."""

    def __init__(self, config: CampaignConfig, store: CampaignStore, conn: Any) -> None:
        self.config = config
        self.store = store
        self.conn = conn


def check_plan(args: argparse.Namespace) -> None:
    scope = planning.parse_scope(args.scope)
    planning.parse_stages(args.stages)
    planning.parse_rate(args.rate)
    if not 0 < args.pass_mark <= 1:
        raise CampaignError(f"--pass-mark {args.pass_mark}: expected a share in (0, 1]")
    if scope.path is not None:
        read_did_file(scope.path, "")


async def plan_campaign(ctx: Context, args: argparse.Namespace) -> int:
    scope = planning.parse_scope(args.scope)
    percents = planning.parse_stages(args.stages)
    rate = planning.parse_rate(args.rate)
    existing = await ctx.store.find(args.name)
    if existing is not None and existing.state != PLANNED:
        raise CampaignError(
            f"campaign {args.name!r} is {existing.state}: plan a new campaign under another name"
        )
    out = args.out or Path("campaigns") / args.name
    async with network(ctx.config, scope.hosts) as net:
        repos, inactive = await planning.discover(
            scope, net, ctx.config.relay_hosts, ctx.conn, ctx.config.discovery
        )
        ordered = planning.order(args.name, repos)
        samples = await planning.sample(net, ordered, max(0, args.sample))
    doc = planning.build(args.name, scope, ordered, inactive, percents, rate, args.undo, samples)
    json_path, md_path = planning.write(out, doc)
    stored = [json.dumps({"did": r["did"], "host": r["host"], "rev": r["rev"]}) for r in doc["repos"]]
    await ctx.store.create(planning.stored_fields(doc, out, percents, args.pass_mark), stored)
    print(
        f"campaign {args.name}: {doc['repos_total']} repos in {len(percents)} stages; "
        f"estimated {doc['estimate']['records']:,} records, {doc['estimate']['minutes_at_rate']:g} min "
        f"at {rate:g}/min; wrote {json_path} and {md_path}"
    )
    return 0


async def apply_campaign(ctx: Context, args: argparse.Namespace) -> int:
    if ctx.config.partitions > 1 and not args.dry_run:
        # Its enqueue script and stage-drain check read one `repo_backfill` and one
        # `firehose_backfill` stream; partitioned streams are not followed yet (docs/operations.md).
        raise CampaignError(
            "campaign apply does not support partitioned streams yet "
            f"(STREAMFILL_PARTITIONS={ctx.config.partitions})"
        )
    if args.dry_run:
        dry_run(await ctx.store.get(args.name))
        return 0
    config = ctx.config
    if args.max_live_lag is not None:  # this apply's own threshold; resumes at half of it
        config = replace(
            config,
            throttle=True,
            throttle_live_lag_s=args.max_live_lag,
            throttle_resume_lag_s=args.max_live_lag / 2,
        )
    live = live_keys(config.prefix, config.partitions)
    throttle = live_throttle(ctx.store.redis, config, f"campaign-{args.name}", live)
    applier = Applier(ctx.store, ctx.conn, args.name, out=args.out, throttle=throttle, follow=args.follow)
    return await applier.run()


async def approve(ctx: Context, args: argparse.Namespace) -> int:
    campaign = await ctx.store.get(args.name)
    passed = campaign.gates[-1]["passed"] if campaign.gates else True
    if campaign.state == AWAITING and not passed and not args.force:
        raise CampaignError(
            f"campaign {args.name!r}: its last gate did not pass; approve --force to go on anyway"
        )
    if campaign.stage == len(campaign.stages) - 1:
        await ctx.store.transition(args.name, {AWAITING}, "approve", state=COMPLETED)
        print(f"campaign {args.name}: approved; completed")
        return 0
    await ctx.store.transition(args.name, {AWAITING}, "approve", state=RUNNING, stage=str(campaign.stage + 1))
    print(
        f"campaign {args.name}: approved; stage {campaign.stage + 2} next "
        f"(run `streamfill campaign apply {args.name}`)"
    )
    return 0


async def reject(ctx: Context, args: argparse.Namespace) -> int:
    old = await ctx.store.transition(args.name, {AWAITING, RUNNING, PAUSED}, "reject", state=REJECTED)
    print(f"campaign {args.name}: rejected (was {old})")
    found = await ctx.store.get(args.name)
    if found.undo:
        from workers.campaign.rollback import rollback

        return await rollback(ctx.store, ctx.conn, found, None)
    return 0


def transition(action: str, allowed: frozenset[str], state: str) -> Action:
    async def run(ctx: Context, args: argparse.Namespace) -> int:
        old = await ctx.store.transition(args.name, allowed, action, state=state)
        print(f"campaign {args.name}: {old} -> {state}")
        return 0

    return run


ACTIONS: dict[str, Action] = {
    "approve": approve,
    "reject": reject,
    "pause": transition("pause", frozenset({RUNNING}), PAUSED),
    "resume": transition("resume", frozenset({PAUSED}), RUNNING),
    "abort": transition("abort", frozenset({PLANNED, *ACTIVE}), ABORTED),
}


def status_line(c: Campaign) -> str:
    """One line per campaign (also `streamfill status`)."""
    width = 20
    done = round(width * c.cursor / c.total) if c.total else width
    bar = "#" * done + "." * (width - done)
    gate = ""
    if c.gates:
        g = c.gates[-1]
        gate = f"; gate {g['stage']}: {g['indexed_share']:.0%} indexed, {'pass' if g['passed'] else 'FAIL'}"
    return (
        f"campaign {c.name}: {c.state}, stage {c.stage + 1}/{len(c.stages)} [{bar}] "
        f"{c.cursor}/{c.total} enqueued{gate}"
    )


async def active_campaign_lines(redis: Any, keys: Keys) -> list[str]:
    """One line per running, paused or gated campaign (for `streamfill status`)."""
    store = CampaignStore(redis, keys)
    found = [await store.find(n) for n in await store.names()]
    return [status_line(c) for c in found if c is not None and c.state in ACTIVE]


async def show_status(ctx: Context, args: argparse.Namespace) -> int:
    names = [args.name] if args.name else await ctx.store.names()
    campaigns = [await ctx.store.get(n) for n in names]
    if args.json:
        print(json.dumps([c.to_json() | artifacts(c) for c in campaigns], indent=1))
        return 0
    if not campaigns:
        print("no campaigns")
    for c in campaigns:
        print(status_line(c))
        for g in c.gates:
            lag = "n/a" if g["live_lag_s"] is None else f"{g['live_lag_s']:.1f} s"
            print(
                f"  gate {g['stage']}: {g['repos']} repos, {g['done']} done, {g['failed']} failed, "
                f"{g['dead_lettered']} dead-lettered, {g['records_written']} records, live lag {lag}, "
                f"{g['indexed_share']:.1%} fully indexed: {'pass' if g['passed'] else 'FAIL'}"
            )
        for key, path in artifacts(c).items():
            print(f"  {key}: {path}")
    return 0


def artifacts(c: Campaign) -> dict[str, str]:
    out = Path(c.out_dir)
    names = {
        "plan": "plan.json",
        "results": "execution_results.json",
        "soak": "soak.md",
        "rollback": "rollback.sql",
    }
    found = {k: str(out / f) for k, f in names.items() if (out / f).exists()}
    return found | {"batches": str(out / "batches")} if (out / "batches").exists() else found


async def run_soak(ctx: Context, args: argparse.Namespace) -> int:
    from workers.campaign.soak import SoakOptions, soak

    campaign = await ctx.store.get(args.name)
    options = SoakOptions(args.duration, args.interval, args.sample, args.max_lag_growth, args.max_dlq_growth)
    return await soak(ctx, campaign, options, args.out or Path(campaign.out_dir))


async def run_rollback(ctx: Context, args: argparse.Namespace) -> int:
    from workers.campaign.rollback import rollback

    return await rollback(ctx.store, ctx.conn, await ctx.store.get(args.name), args.out)
