"""`streamfill demo`: the whole pipeline on one machine, verified exactly (`make demo`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers._specs import load
from workers.demo.options import DemoError, DemoOptions
from workers.demo.run import run_demo
from workers.settings import POSTGRES_URL, Setting, Spec, add_flags, positive_integer, positive_number
from workers.settings import redis_settings as _redis


@dataclass(frozen=True)
class DemoServers:
    """The servers the demo uses; embedded ones when unset."""

    redis_url: str | None = None
    database_url: str | None = None


SPEC: Spec[DemoServers] = Spec(
    "demo",
    DemoServers,
    (
        _redis()[0],
        Setting(
            "database_url",
            "DATABASE_URL",
            POSTGRES_URL,
            "PostgreSQL server; the demo creates a database of its own on it (and drops it after a "
            "correct verdict)",
            optional=True,
            secret=True,
            shown_default="none: an embedded PostgreSQL",
        ),
    ),
)

DESCRIPTION = """\
Start a local AT Protocol network (devnet: relay, PDS hosts, PLC directory, labeler), the whole
pipeline as separate processes (1 ingester, 2 backfillers, 2 indexers by default), and a live dashboard.
When the backfill is done and the streams are drained, pause the network's activity, let the
pipeline settle, and verify PostgreSQL against the network's ground truth. Exit 1 on any
mismatch. On a terminal the dashboard redraws; otherwise a progress line every few seconds."""

EPILOG = """\
examples:
  streamfill demo                    500 repos, ~114k records, about 20 s on 2 cores
  streamfill demo --repos 2000 --chaos
  streamfill demo --json > verdict.json"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="devnet -> ingester -> backfillers -> indexers -> PostgreSQL, verified",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--repos",
        type=positive_integer,
        default=500,
        metavar="N",
        help="repos in the devnet (default 500, ~100k records)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        metavar="N",
        help="devnet seed: the same seed, the same network (default 1)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=20.0,
        metavar="X",
        help="live firehose events per second (default 20; 0: none)",
    )
    p.add_argument(
        "--chaos",
        action="store_true",
        help="SIGKILL a random worker every few seconds (one down at a time), restart it",
    )
    p.add_argument(
        "--chaos-interval",
        type=positive_number,
        default=4.0,
        metavar="S",
        help="seconds between kills (default 4)",
    )
    p.add_argument(
        "--cluster",
        type=positive_integer,
        default=0,
        metavar="N",
        help="run on an embedded Redis Cluster of N masters, a replica each (REDIS_URL is not used); "
        "with --chaos a master is also killed once and its replica takes over",
    )
    p.add_argument(
        "--partitions",
        type=positive_integer,
        default=0,
        metavar="P",
        help="STREAMFILL_PARTITIONS for the workers (default: 2 x N with --cluster, else 1)",
    )
    p.add_argument(
        "--backfillers",
        type=positive_integer,
        default=2,
        metavar="N",
        help="backfiller processes (default 2)",
    )
    p.add_argument(
        "--indexers",
        type=positive_integer,
        default=2,
        metavar="N",
        help="indexer processes (default 2)",
    )
    p.add_argument("--keep", action="store_true", help="leave everything running after the verdict")
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object, no dashboard")
    p.add_argument(
        "--timeout",
        type=positive_number,
        default=1500.0,
        metavar="S",
        help="give up after S seconds (default 1500)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="logs and the truth file (default: a new temporary directory)",
    )
    add_flags(p, SPEC)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    servers = load(SPEC, args).config
    options = DemoOptions(
        repos=args.repos,
        seed=args.seed,
        firehose_rate=args.rate,
        chaos=args.chaos,
        chaos_interval_s=args.chaos_interval,
        keep=args.keep,
        json=args.json,
        timeout_s=args.timeout,
        redis_url=servers.redis_url,
        database_url=servers.database_url,
        workdir=args.workdir,
        cluster=args.cluster,
        partitions=args.partitions,
        backfillers=args.backfillers,
        indexers=args.indexers,
    )
    try:
        return run_demo(options)
    except DemoError as exc:
        print(f"streamfill demo: {exc}", file=sys.stderr)
        return 2
