"""The `streamfill` command.

Each module in COMMAND_MODULES (imported at the top: the composition root) exposes
`register(subparsers)`, which adds its subcommand and sets `func` to a callable
`(args) -> int`. Settings are read at this edge (workers/_specs.py) and passed down as frozen
values; errors at the edge are one line and exit status 2
(workers/_edge.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import NoReturn

import devnet.cli
import workers.admin
import workers.backfiller.cli
import workers.campaign.cli
import workers.config_cli
import workers.control.audit_cli
import workers.control.cli
import workers.control.recovery
import workers.demo.cli
import workers.indexer.cli
import workers.ingester.cli
import workers.inspect
import workers.replayer.cli
from workers._edge import debug_enabled, run_command

# The composition root: every module that adds subcommands, imported here where an import graph
# sees them (devnet included: `streamfill devnet` serves the simulated network).
COMMAND_MODULES: tuple[ModuleType, ...] = (
    workers.ingester.cli,
    workers.backfiller.cli,
    workers.indexer.cli,
    workers.replayer.cli,
    workers.admin,  # status, groups, consumers, trim, dlq
    workers.inspect,  # inspect car / frames
    workers.config_cli,  # config show / reference / set / revert / history
    workers.control.cli,  # workers (heartbeats)
    workers.control.audit_cli,  # audit, audit export
    workers.control.recovery,  # resync, firehose replay
    workers.campaign.cli,  # campaign plan / apply / approve / ... (issue #15)
    workers.demo.cli,
    devnet.cli,  # devnet
)

DESCRIPTION = """\
Backfill and replay pipelines on Redis streams: rebuild, and keep up to date, the state of the
AT Protocol network in PostgreSQL, and replay Captain's Log files into Elasticsearch.

Each worker is a separate process; workers talk only through Redis streams and consumer groups.
Every setting is an environment variable and a flag of the same meaning (see `streamfill config
reference`); with no REDIS_URL / DATABASE_URL, commands start embedded servers for development."""

EPILOG = """\
examples:
  streamfill demo                                  the whole pipeline on a local network, verified
  REDIS_URL=redis://redis:6379/0 INGESTER_RELAY_HOSTS=https://bsky.network streamfill ingester
  streamfill backfiller --concurrency 16
  DATABASE_URL=postgresql://app@db/bsky streamfill indexer --migrate
  streamfill status --watch                        streams, groups, lag, pending, dead letters
  streamfill config show backfiller                effective settings and where each comes from

`streamfill COMMAND --help` describes a command, its flags and their variables and defaults."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (and exit status 2, as argparse's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _version() -> str:
    try:
        return version("streamfill")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="streamfill",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"streamfill {_version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of errors that are otherwise one line (env STREAMFILL_DEBUG=1)",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", help="the command to run (one of those below)"
    )
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: int(args.func(args)), debug=debug_enabled(args.debug))


if __name__ == "__main__":
    sys.exit(main())
