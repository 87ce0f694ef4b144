"""The `streamfill` command: one subcommand per module in COMMAND_MODULES.

Each module exposes `register(subparsers)`, which adds its parser and sets `func` to a callable
`(args) -> int`. Configuration is read from the environment here, at the edge, and passed down
as frozen values.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add subcommands. A module that fails to import is a bug: the ImportError surfaces.
COMMAND_MODULES: tuple[str, ...] = (
    "workers.admin",  # status, groups, consumers, trim, dlq
    "workers.inspect",  # inspect car / frames
    "devnet.cli",  # devnet
    "workers.ingester.cli",
    "workers.backfiller.cli",
    "workers.indexer.cli",
    "workers.demo.cli",
    "workers.replayer.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamfill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
    except KeyboardInterrupt:
        code = 130
    return code


if __name__ == "__main__":
    sys.exit(main())
