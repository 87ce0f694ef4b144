"""`streamfill demo`: the whole pipeline on one machine, verified exactly (`make demo`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from workers._env import env_str
from workers.demo.run import DemoError, DemoOptions, run_demo


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="devnet -> ingester -> backfillers -> indexers -> PostgreSQL, verified")
    p.add_argument("--repos", type=int, default=500, help="repos in the devnet (default 500, ~100k records)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=20.0, help="live firehose events per second (default 20)")
    p.add_argument(
        "--chaos", action="store_true", help="SIGKILL a random worker every few seconds, restart it"
    )
    p.add_argument("--chaos-interval", type=float, default=4.0, metavar="S")
    p.add_argument("--keep", action="store_true", help="leave everything running after the verdict")
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object, no dashboard")
    p.add_argument("--timeout", type=float, default=1500.0, metavar="S")
    p.add_argument("--workdir", type=Path, default=None, help="logs and truth file (default: a temp dir)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    options = DemoOptions(
        repos=args.repos,
        seed=args.seed,
        firehose_rate=args.rate,
        chaos=args.chaos,
        chaos_interval_s=args.chaos_interval,
        keep=args.keep,
        json=args.json,
        timeout_s=args.timeout,
        redis_url=env_str("REDIS_URL") or None,
        database_url=env_str("DATABASE_URL") or None,
        workdir=args.workdir,
    )
    try:
        return run_demo(options)
    except DemoError as exc:
        print(f"streamfill demo: {exc}", file=sys.stderr)
        return 2
