"""The `streamfill` command.

Each module in COMMAND_MODULES (the composition root) exposes `register(subparsers)`, which adds
its subcommand and sets `func` to a callable `(args) -> int`. A worker command (WORKER_COMMANDS)
imports only its own module: every replica's process starts without importing the others (the
devnet's aiohttp server, the admin and campaign commands: ~40 % of a worker's import CPU).
Settings are read at this edge (workers/_specs.py) and passed down as frozen values; errors at
the edge are one line and exit status 2 (workers/_edge.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from workers._edge import debug_enabled, run_command

# The composition root: every module that adds subcommands (devnet included: `streamfill devnet`
# serves the simulated network), imported when the parser is built.
COMMAND_MODULES: tuple[str, ...] = (
    "workers.ingester.cli",
    "workers.backfiller.cli",
    "workers.indexer.cli",
    "workers.replayer.cli",
    "workers.admin",  # status, groups, consumers, trim, dlq
    "workers.inspect",  # inspect car / frames
    "workers.config_cli",  # config show / reference / set / revert / history
    "workers.control.cli",  # workers (heartbeats)
    "workers.control.audit_cli",  # audit, audit export
    "workers.control.recovery",  # resync, firehose replay
    "workers.campaign.cli",  # campaign plan / apply / approve / ... (issue #15)
    "workers.demo.cli",
    "devnet.cli",  # devnet
)
# The long-running workers, each the one command of its module: started as many replicas, they
# import nothing else (tests/workers/test_cli_help.py checks each parses as in the whole parser).
WORKER_COMMANDS: dict[str, str] = {
    "ingester": "workers.ingester.cli",
    "backfiller": "workers.backfiller.cli",
    "indexer": "workers.indexer.cli",
    "replayer": "workers.replayer.cli",
}

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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with a worker `command`, only that command's (see WORKER_COMMANDS)."""
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
    worker = WORKER_COMMANDS.get(command or "")
    for name in (worker,) if worker else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command named in `argv` (its first argument that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command(argv)).parse_args(argv)
    return run_command(lambda: int(args.func(args)), debug=debug_enabled(args.debug))


if __name__ == "__main__":
    sys.exit(main())
