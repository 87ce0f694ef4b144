"""The `streamfill` command.

Each command module (the composition root below) exposes `register(subparsers)`, which adds
its subcommand and sets `func` to a callable `(args) -> int`. A worker command (WORKER_COMMANDS)
imports only its own module: every replica's process starts without importing the others (the
devnet's aiohttp server, the admin and campaign commands: ~40 % of a worker's import CPU).
Settings are read at this edge (workers/_specs.py) and passed down as frozen values; errors at
the edge are one line and exit status 2 (workers/_edge.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import NoReturn

from workers._edge import debug_enabled, run_command

# The composition root, as plain import statements (any import graph sees every arrow, devnet's
# included: `streamfill devnet` serves the simulated network). They sit in functions so that a
# long-running worker, started as many replicas, imports its own command module and nothing else
# (tests/workers/test_cli_help.py checks each parses as in the whole parser).


def _ingester() -> ModuleType:
    import workers.ingester.cli

    return workers.ingester.cli


def _backfiller() -> ModuleType:
    import workers.backfiller.cli

    return workers.backfiller.cli


def _indexer() -> ModuleType:
    import workers.indexer.cli

    return workers.indexer.cli


def _replayer() -> ModuleType:
    import workers.replayer.cli

    return workers.replayer.cli


def _every_command() -> tuple[ModuleType, ...]:
    import devnet.cli
    import workers.admin
    import workers.campaign.cli
    import workers.config_cli
    import workers.control.audit_cli
    import workers.control.cli
    import workers.control.recovery
    import workers.demo.cli
    import workers.inspect

    workers_first = tuple(load() for load in WORKER_COMMANDS.values())
    return (
        *workers_first,
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


# The long-running workers, each the one command of its module.
WORKER_COMMANDS: dict[str, Callable[[], ModuleType]] = {
    "ingester": _ingester,
    "backfiller": _backfiller,
    "indexer": _indexer,
    "replayer": _replayer,
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
    for module in (worker(),) if worker else _every_command():
        module.register(sub)
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
