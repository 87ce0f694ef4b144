"""`streamfill devnet`: run a local AT Protocol network until SIGTERM/SIGINT.

Prints the URLs (human-readable on stderr, one JSON line on stdout for a parent process), writes
the ground truth to `--truth FILE` on SIGUSR1 (and on `POST /truth/write`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from devnet.config import DevnetConfig, FaultConfig
from devnet.server import Devnet

__all__ = ["config_from_args", "register"]


def _ints(text: str) -> frozenset[int]:
    return frozenset(int(part) for part in text.split(",") if part.strip())


def _strs(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _add_fault_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fault injection (REPOS = comma-separated repo indexes or DIDs)")
    g.add_argument(
        "--fail-list-pages",
        type=_ints,
        default=frozenset(),
        metavar="I,J",
        help="relay listRepos pages (0-based, for the requested limit) that answer 500",
    )
    g.add_argument(
        "--fail-list-cursors",
        type=_strs,
        default=frozenset(),
        metavar="C,D",
        help="relay listRepos cursors that answer 500",
    )
    g.add_argument(
        "--fail-list-times",
        type=int,
        default=0,
        metavar="N",
        help="a failing page recovers after N failures (0 = never)",
    )
    g.add_argument(
        "--rate-limit-pds",
        type=_ints,
        default=frozenset(),
        metavar="I,J",
        help="PDS indexes whose getRepo answers 429 on a share of calls",
    )
    g.add_argument(
        "--rate-limit-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="share of getRepo calls that answer 429 on those hosts (default 0.5)",
    )
    g.add_argument("--retry-after", type=int, default=1, metavar="S", help="Retry-After seconds on 429")
    g.add_argument(
        "--slow-repos",
        type=_strs,
        default=frozenset(),
        metavar="REPOS",
        help="repos whose CAR is served slowly",
    )
    g.add_argument(
        "--slow-pds",
        type=_ints,
        default=frozenset(),
        metavar="I,J",
        help="PDS indexes serving every CAR slowly",
    )
    g.add_argument(
        "--slow-delay", type=float, default=0.2, metavar="S", help="pause before each 64 KiB chunk"
    )
    g.add_argument(
        "--hang-repos",
        type=_strs,
        default=frozenset(),
        metavar="REPOS",
        help="repos whose getRepo never answers",
    )
    g.add_argument(
        "--hang-pds",
        type=_ints,
        default=frozenset(),
        metavar="I,J",
        help="PDS indexes whose getRepo never answers",
    )
    g.add_argument(
        "--truncate-repos",
        type=_strs,
        default=frozenset(),
        metavar="REPOS",
        help="repos whose CAR is cut short",
    )
    g.add_argument(
        "--bad-sig-repos",
        type=_strs,
        default=frozenset(),
        metavar="REPOS",
        help="repos whose commit signature does not verify",
    )
    g.add_argument("--takendown", type=int, default=0, metavar="N", help="N repos start taken down")
    g.add_argument("--deactivated", type=int, default=0, metavar="N", help="N repos start deactivated")
    g.add_argument(
        "--missing",
        type=int,
        default=0,
        metavar="N",
        help="N repos listed by the relay but unknown to their PDS",
    )
    g.add_argument(
        "--drop-ws-every",
        type=int,
        default=0,
        metavar="K",
        help="drop every websocket connection after K frames",
    )


def register(sub: Any) -> None:
    """Add the `devnet` subcommand."""
    text = "run a local, deterministic AT Protocol network (relay, PDS hosts, PLC, labeler)"
    p = sub.add_parser("devnet", help=text, description=text + ", with fault injection, until SIGTERM")
    p.add_argument("--repos", type=int, default=50, help="number of repos (default 50)")
    p.add_argument("--pds-hosts", type=int, default=2, help="number of PDS hosts (default 2)")
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="relay port; PLC, labeler, PDS i use port+1, +2, +3+i (default: ephemeral)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default loopback; 0.0.0.0 in a container)"
    )
    p.add_argument("--seed", type=int, default=0, help="the same seed, the same network (default 0)")
    p.add_argument(
        "--firehose-rate", type=float, default=5.0, help="live events per second (default 5; 0 = none)"
    )
    p.add_argument(
        "--truth", default=None, metavar="FILE", help="ground-truth JSON lines, written on SIGUSR1"
    )
    p.add_argument(
        "--huge-repo-records",
        type=int,
        default=None,
        help="records in the one huge repo (default: 100000 when --repos >= 400, else none)",
    )
    p.add_argument(
        "--event-log-size", type=int, default=10_000, help="firehose frames kept for cursor replay"
    )
    p.add_argument(
        "--relay-omit",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="accounts the relay's listRepos leaves out, as the real one does; only their PDS lists "
        "them (default 0.05)",
    )
    _add_fault_flags(p)
    p.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace) -> DevnetConfig:
    """The frozen config for parsed `devnet` arguments."""
    faults = FaultConfig(
        fail_list_pages=args.fail_list_pages, fail_list_cursors=args.fail_list_cursors,
        fail_list_times=args.fail_list_times, rate_limit_pds=args.rate_limit_pds,
        rate_limit_fraction=args.rate_limit_fraction, retry_after_s=args.retry_after,
        slow_repos=args.slow_repos, slow_pds=args.slow_pds, slow_delay_s=args.slow_delay,
        hang_repos=args.hang_repos, hang_pds=args.hang_pds, truncate_repos=args.truncate_repos,
        bad_sig_repos=args.bad_sig_repos, takendown=args.takendown, deactivated=args.deactivated,
        missing=args.missing, drop_ws_every=args.drop_ws_every,
    )  # fmt: skip
    return DevnetConfig(
        repos=args.repos, pds_hosts=args.pds_hosts, seed=args.seed, port=args.port, host=args.host,
        firehose_rate=args.firehose_rate, truth_path=args.truth, huge_repo_records=args.huge_repo_records,
        event_log_size=args.event_log_size, relay_omit_fraction=args.relay_omit, faults=faults,
    )  # fmt: skip


def _write_truth(net: Devnet) -> None:
    try:
        path, lines = net.write_truth()
    except ValueError as exc:
        print(f"devnet: cannot write truth: {exc}", file=sys.stderr)
        return
    print(f"devnet: wrote {lines} truth lines to {path}", file=sys.stderr)


async def _serve(config: DevnetConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Devnet(config) as net:
        loop.add_signal_handler(signal.SIGUSR1, _write_truth, net)
        info = net.describe()
        for name in ("relay", "plc", "labeler", "firehose", "labels"):
            print(f"devnet {name:9} {info[name]}", file=sys.stderr)
        for index, url in enumerate(info["pds"]):
            print(f"devnet pds{index:<6} {url}", file=sys.stderr)
        print(json.dumps(info), flush=True)
        await stop.wait()
    return 0


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(config_from_args(args)))
