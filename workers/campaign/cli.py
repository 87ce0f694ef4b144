"""`streamfill campaign plan|apply|approve|reject|pause|resume|abort|status|soak|rollback`."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio

from streams import Keys
from workers._edge import connect_postgres
from workers._embedded_pg import database_url_or_embedded
from workers._env import redis_session
from workers._specs import load
from workers.campaign import plan as planning
from workers.campaign.actions import (
    ACTIONS,
    Action,
    Context,
    apply_campaign,
    check_plan,
    plan_campaign,
    run_rollback,
    run_soak,
    show_status,
)
from workers.campaign.config import SPEC, CampaignConfig
from workers.campaign.state import (
    CampaignStore,
)
from workers.settings import add_flags, positive_integer, positive_number

DESCRIPTION = """\
Backfill campaigns: a backfill run as a guarded operation. `plan` lists the repos of a scope and
cuts them into stages (plan.json, plan.md); `apply` enqueues them stage by stage at a rate,
tagging every job, and halts at each stage's gate for an operator to `approve` or `reject`;
`soak` compares the pipeline's health with its state before the campaign and spot-checks repos
against their PDS; `rollback` undoes an --undo campaign. State lives in Redis: any operator can
act from anywhere, and every change is audited."""


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
    p.set_defaults(func=_runner(plan_campaign, postgres=True))

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
    p.set_defaults(func=_runner(apply_campaign, postgres=True))

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
        p.set_defaults(func=_runner(ACTIONS[name], postgres=name == "reject"))

    p = _command(
        ops, "status", "every campaign (or one): state, stage, progress, gates, artifacts", named=False
    )
    p.add_argument("name", nargs="?", help="a campaign (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(func=_runner(show_status))

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
    p.set_defaults(func=_runner(run_soak, postgres=True))

    p = _command(ops, "rollback", "restore the rows an --undo campaign changed (audited, idempotent)")
    p.add_argument("--out", type=Path, help="where rollback.sql goes (default: the plan's directory)")
    p.set_defaults(func=_runner(run_rollback, postgres=True))


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
            check_plan(args)
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


__all__ = ["register"]
