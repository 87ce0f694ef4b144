"""`streamfill campaign plan|apply|approve|reject|pause|resume|abort|status|soak|rollback`."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from streams import Keys
from workers._edge import connect_postgres
from workers._embedded_pg import database_url_or_embedded
from workers._env import redis_session
from workers._specs import load
from workers._throttle import live_keys, live_throttle
from workers.campaign import plan as planning
from workers.campaign.apply import Applier, dry_run
from workers.campaign.config import SPEC, CampaignConfig
from workers.campaign.discover import network, read_did_file
from workers.campaign.state import (
    ABORTED,
    ACTIVE,
    AWAITING,
    COMPLETED,
    FINAL,
    PAUSED,
    PLANNED,
    REJECTED,
    RUNNING,
    Campaign,
    CampaignError,
    CampaignStore,
)
from workers.settings import add_flags, positive_integer, positive_number

Action = Callable[["Context", argparse.Namespace], Awaitable[int]]

DESCRIPTION = """\
Backfill campaigns: a backfill run as a guarded operation. `plan` lists the repos of a scope and
cuts them into stages (plan.json, plan.md); `apply` enqueues them stage by stage at a rate,
tagging every job, and halts at each stage's gate for an operator to `approve` or `reject`;
`soak` compares the pipeline's health with its state before the campaign and spot-checks repos
against their PDS; `rollback` undoes an --undo campaign. State lives in Redis: any operator can
act from anywhere, and every change is audited."""


class Context:
    """What an action needs: the store, and PostgreSQL when the action reads it."""

    def __init__(self, config: CampaignConfig, store: CampaignStore, conn: Any) -> None:
        self.config = config
        self.store = store
        self.conn = conn


def register(sub: Any) -> None:
    top = sub.add_parser(
        "campaign",
        help="plan, apply (gated), soak and roll back backfill campaigns",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ops = top.add_subparsers(dest="op", metavar="OPERATION", title="operations", help="what to do")
    ops.required = True

    p = _command(
        ops, "plan", "list a scope's repos, cut them into stages, estimate; write plan.json, plan.md"
    )
    p.add_argument("--scope", required=True, help="all | hosts=H1,H2 | dids=FILE | stale (behind or missing)")
    p.add_argument(
        "--stages", default=planning.DEFAULT_STAGES, help="cumulative percentages (default 1%%,10%%,100%%)"
    )
    p.add_argument(
        "--rate",
        default=planning.DEFAULT_RATE,
        help="repos enqueued per minute: N/min or N/s (default 600/min)",
    )
    p.add_argument(
        "--undo", action="store_true", help="keep prior rows so that `rollback` can undo the campaign"
    )
    p.add_argument(
        "--out", type=Path, help="directory of the plan and the apply artifacts (default campaigns/NAME)"
    )
    p.add_argument(
        "--sample",
        type=int,
        default=planning.DEFAULT_SAMPLE,
        metavar="N",
        help="repos fetched for the estimates (default 5; 0: none)",
    )
    p.add_argument(
        "--pass-mark",
        type=float,
        default=0.85,
        metavar="F",
        help="share of a stage's repos that must be fully indexed to pass its gate (default 0.85)",
    )
    p.set_defaults(func=_runner(_plan, postgres=True))

    p = _command(ops, "apply", "enqueue the plan stage by stage; halt at each gate (rerun continues)")
    p.add_argument("--dry-run", action="store_true", help="walk the plan and report, enqueue nothing")
    p.add_argument("--out", type=Path, help="artifact directory (default: the plan's)")
    p.add_argument(
        "--max-live-lag",
        type=positive_number,
        metavar="S",
        help="pause while live lag (the oldest unacked live entry) is above S seconds, resume below "
        "S/2 (default: THROTTLE_LIVE_LAG_S and THROTTLE_RESUME_LAG_S)",
    )
    p.add_argument("--follow", action="store_true", help="keep running across gates and pauses")
    p.set_defaults(func=_runner(_apply, postgres=True))

    for name, text in (
        ("approve", "pass the gate: continue with the next stage (audited)"),
        ("reject", "stop at the gate (audited; an --undo campaign is rolled back)"),
        ("pause", "stop enqueuing (audited)"),
        ("resume", "continue a paused campaign (audited)"),
        ("abort", "end the campaign; jobs already enqueued still run (audited)"),
    ):
        p = _command(ops, name, text)
        if name == "approve":
            p.add_argument("--force", action="store_true", help="approve a gate that did not pass")
        p.set_defaults(func=_runner(_ACTIONS[name], postgres=name == "reject"))

    p = _command(
        ops, "status", "every campaign (or one): state, stage, progress, gates, artifacts", named=False
    )
    p.add_argument("name", nargs="?", help="a campaign (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(func=_runner(_status))

    p = _command(
        ops, "soak", "read-only: health against the baseline and a sample of repos against their PDS"
    )
    p.add_argument(
        "--for",
        dest="duration",
        type=positive_number,
        required=True,
        metavar="S",
        help="how long to sample, in seconds",
    )
    # `--interval` is also accepted; `--every` comes first because `--interval` is a replayer setting's flag.
    p.add_argument(
        "--every",
        "--interval",
        dest="interval",
        type=positive_number,
        default=60.0,
        metavar="S",
        help="seconds between health samples (default 60)",
    )
    p.add_argument(
        "--sample", type=positive_integer, default=20, metavar="N", help="repos checked (default 20)"
    )
    p.add_argument(
        "--max-lag-growth",
        type=float,
        default=30.0,
        metavar="S",
        help="no-go when live lag grows more than S seconds over the baseline (default 30)",
    )
    p.add_argument(
        "--max-dlq-growth",
        type=int,
        default=0,
        metavar="N",
        help="no-go when a dead-letter stream grows by more than N entries during the soak (default 0)",
    )
    p.add_argument("--out", type=Path, help="where soak.md goes (default: the plan's directory)")
    p.set_defaults(func=_runner(_soak, postgres=True))

    p = _command(ops, "rollback", "restore the rows an --undo campaign changed (audited, idempotent)")
    p.add_argument("--out", type=Path, help="where rollback.sql goes (default: the plan's directory)")
    p.set_defaults(func=_runner(_rollback, postgres=True))


def _command(ops: Any, name: str, text: str, *, named: bool = True) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = ops.add_parser(name, help=text, description=text)
    if named:
        p.add_argument("name", help="the campaign's name")
    add_flags(p, SPEC)
    return p


def _runner(action: Action, *, postgres: bool = False) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        config = load(SPEC, args).config
        if args.__dict__.get("name") is not None:
            planning.check_name(args.name)
        if args.op == "plan":  # bad input is refused before any server is contacted
            _check_plan(args)
        with contextlib.ExitStack() as stack:
            # Only `--scope stale` plans read PostgreSQL; a dry run does not either.
            needed = postgres and not getattr(args, "dry_run", False)
            needed = needed and (args.op != "plan" or args.scope == "stale")
            url = stack.enter_context(database_url_or_embedded(config.database_url)) if needed else None
            return anyio.run(_session, config, url, action, args)

    return run


async def _session(
    config: CampaignConfig, database_url: str | None, action: Action, args: argparse.Namespace
) -> int:
    async with redis_session(config.redis_url) as redis, _postgres(database_url) as conn:
        return await action(Context(config, CampaignStore(redis, Keys(config.prefix)), conn), args)


@contextlib.asynccontextmanager
async def _postgres(url: str | None) -> AsyncIterator[Any]:
    if url is None:
        yield None
        return
    conn = await connect_postgres(url)
    try:
        yield conn
    finally:
        await conn.close()


def _check_plan(args: argparse.Namespace) -> None:
    scope = planning.parse_scope(args.scope)
    planning.parse_stages(args.stages)
    planning.parse_rate(args.rate)
    if not 0 < args.pass_mark <= 1:
        raise CampaignError(f"--pass-mark {args.pass_mark}: expected a share in (0, 1]")
    if scope.path is not None:
        read_did_file(scope.path, "")


async def _plan(ctx: Context, args: argparse.Namespace) -> int:
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


async def _apply(ctx: Context, args: argparse.Namespace) -> int:
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


async def _approve(ctx: Context, args: argparse.Namespace) -> int:
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


async def _reject(ctx: Context, args: argparse.Namespace) -> int:
    old = await ctx.store.transition(args.name, {AWAITING, RUNNING, PAUSED}, "reject", state=REJECTED)
    print(f"campaign {args.name}: rejected (was {old})")
    found = await ctx.store.get(args.name)
    if found.undo:
        from workers.campaign.rollback import rollback

        return await rollback(ctx.store, ctx.conn, found, None)
    return 0


def _simple(action: str, allowed: frozenset[str], state: str) -> Action:
    async def run(ctx: Context, args: argparse.Namespace) -> int:
        old = await ctx.store.transition(args.name, allowed, action, state=state)
        print(f"campaign {args.name}: {old} -> {state}")
        return 0

    return run


_ACTIONS: dict[str, Action] = {
    "approve": _approve,
    "reject": _reject,
    "pause": _simple("pause", frozenset({RUNNING}), PAUSED),
    "resume": _simple("resume", frozenset({PAUSED}), RUNNING),
    "abort": _simple("abort", frozenset({PLANNED, *ACTIVE}), ABORTED),
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


async def _status(ctx: Context, args: argparse.Namespace) -> int:
    names = [args.name] if args.name else await ctx.store.names()
    campaigns = [await ctx.store.get(n) for n in names]
    if args.json:
        print(json.dumps([c.to_json() | _artifacts(c) for c in campaigns], indent=1))
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
        for key, path in _artifacts(c).items():
            print(f"  {key}: {path}")
    return 0


def _artifacts(c: Campaign) -> dict[str, str]:
    out = Path(c.out_dir)
    names = {
        "plan": "plan.json",
        "results": "execution_results.json",
        "soak": "soak.md",
        "rollback": "rollback.sql",
    }
    found = {k: str(out / f) for k, f in names.items() if (out / f).exists()}
    return found | {"batches": str(out / "batches")} if (out / "batches").exists() else found


async def _soak(ctx: Context, args: argparse.Namespace) -> int:
    from workers.campaign.soak import SoakOptions, soak

    campaign = await ctx.store.get(args.name)
    options = SoakOptions(args.duration, args.interval, args.sample, args.max_lag_growth, args.max_dlq_growth)
    return await soak(ctx, campaign, options, args.out or Path(campaign.out_dir))


async def _rollback(ctx: Context, args: argparse.Namespace) -> int:
    from workers.campaign.rollback import rollback

    return await rollback(ctx.store, ctx.conn, await ctx.store.get(args.name), args.out)


__all__ = ["FINAL", "active_campaign_lines", "register", "status_line"]
