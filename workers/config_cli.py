"""`streamfill config show [KIND] | reference | set | revert | history`: effective settings with
their sources, the settings reference generated from the declarations (docs/operations.md embeds
it), and live overrides (workers/control)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from workers._specs import RSKY_NAMES, load, specs
from workers.admin import SPEC as ADMIN_SPEC
from workers.control.cli import register_config, runner, show_overrides
from workers.settings import add_flags, reference, rsky_table, show


def _kinds() -> dict[str, Any]:
    return {spec.kind: spec for spec in specs()}


def register(sub: Any) -> None:
    text = "show effective settings and where they come from; print the settings reference"
    p = sub.add_parser("config", help=text, description=text)
    ops = p.add_subparsers(dest="op", metavar="OPERATION", title="operations", help="what to print")
    ops.required = True
    kinds = sorted(_kinds())
    show_p = ops.add_parser(
        "show",
        help="the settings a worker kind would run with here (environment, defaults), and their sources",
        description="Read the settings of KIND from this environment, as the command would at start "
        "(refusing what it would refuse), and print each value with its source. Passwords in URLs "
        "are masked.",
    )
    show_p.add_argument(
        "kind",
        nargs="?",
        choices=kinds,
        metavar="KIND",
        help=f"one of {', '.join(kinds)}; without it: the active live overrides (in Redis), with "
        "time left, and the effective value of every setting",
    )
    add_flags(show_p, ADMIN_SPEC)
    show_p.add_argument(
        "--json", action="store_true", help="one JSON object: {NAME: {value, source, origin}}"
    )
    show_p.set_defaults(func=_show)
    ref = ops.add_parser(
        "reference",
        help="every setting of every command, as markdown tables",
        description="Print the settings reference (markdown) generated from the declarations.",
    )
    ref.add_argument("--rsky", action="store_true", help="print the table of rsky names instead")
    ref.set_defaults(func=_reference)
    register_config(ops)


def _show(args: argparse.Namespace) -> int:
    if args.kind is None:
        return runner(show_overrides)(args)
    resolved = load(_kinds()[args.kind])
    if args.json:
        doc = {
            e.setting.env: {"value": e.shown(), "source": e.source, "origin": e.origin}
            for e in resolved.values.values()
        }
        print(json.dumps(doc))
    else:
        print("\n".join(show(resolved)))
    return 0


def _reference(args: argparse.Namespace) -> int:
    print(rsky_table(specs(), RSKY_NAMES) if args.rsky else reference(specs()))
    return 0
