"""Flags for a spec's settings, with help that gives each one's meaning, variable and default."""

from __future__ import annotations

import argparse
from typing import Any

from workers.settings._declare import Setting, Spec


def default_text(s: Setting, default: object) -> str:
    """A default as help and the reference show it."""
    if s.shown_default:
        return s.shown_default
    text = s.kind.show(default)
    return text if text else "empty"


def describe(s: Setting, default: object) -> str:
    """`meaning (env NAME or ALIAS; default D; allowed)`."""
    names = " or ".join(s.names)
    extra = [f"env {names}", f"default {default_text(s, default)}"]
    if s.allowed():
        extra.append(s.allowed())
    return f"{s.help} ({'; '.join(extra)})"


def add_flags(parser: argparse.ArgumentParser, spec: Spec[Any], *, role: str | None = None) -> None:
    """One flag per setting `role` reads; a flag wins over its environment variable."""
    group = parser.add_argument_group(
        "settings", "each flag wins over its environment variable, which wins over the default"
    )
    defaults = spec.defaults()
    for s in spec.used(role):
        flag = s.flag_name
        if flag is None:
            continue
        text = describe(s, defaults[s.attr]).replace("%", "%%")
        if s.kind.flag_action == "bool":
            group.add_argument(
                flag, dest=s.attr, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            group.add_argument(flag, dest=s.attr, default=None, metavar=s.kind.metavar, help=text)


def positive_number(text: str) -> float:
    """An argparse type: a number > 0 (seconds, for example)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def positive_integer(text: str) -> int:
    """An argparse type: an integer >= 1 (a count, for example)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value
