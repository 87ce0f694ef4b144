"""The settings reference, generated from the declarations (docs/operations.md embeds it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.settings._declare import Setting, Spec
from workers.settings._flags import default_text
from workers.settings._resolve import Resolved


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(s: Setting, default: object) -> str:
    names = f"`{s.env}`" + "".join(f"<br>`{a}`" for a in s.aliases)
    flag = f"`{s.flag_name}`" if s.flag_name else "—"
    if s.kind.flag_action == "bool" and s.flag_name:
        flag = f"`{s.flag_name}`, `--no-{s.flag_name[2:]}`"
    allowed = s.allowed()
    if s.kind.name == "choice":
        allowed = "one of " + s.kind.metavar.strip("{}").replace(",", ", ")
    meaning = s.help + (f" ({allowed})" if allowed else "") + (" Live." if s.live else "")
    return f"| {names} | {flag} | {_cell(default_text(s, default))} | {_cell(meaning)} |"


def spec_table(spec: Spec[Any]) -> str:
    """One markdown table: variable (aliases), flag, default, meaning."""
    defaults = spec.defaults()
    lines = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    lines += [_row(s, defaults[s.attr]) for s in spec.settings]
    if spec.rules:
        rules = "; ".join(f"`{spec.describe(r)}`" for r in spec.rules)
        lines += ["", f"Checked together at start: {rules}."]
    return "\n".join(lines)


def reference(specs: Sequence[Spec[Any]]) -> str:
    """Every spec's table under its command's heading."""
    return "\n".join(
        f"### {spec.title or f'`streamfill {spec.kind}`'}\n\n{spec_table(spec)}\n" for spec in specs
    )


def rsky_table(specs: Sequence[Spec[Any]], names: Sequence[str]) -> str:
    """What streamfill does with each of rsky's environment `names`: reads it (under the same
    name, or as an alias of its own), or refuses it and says what to use instead."""
    rows = [f"| `{name}` | {_rsky_fate(specs, name)} |" for name in sorted(set(names))]
    return "\n".join(["| rsky name | streamfill |", "|---|---|", *rows])


def _rsky_fate(specs: Sequence[Spec[Any]], name: str) -> str:
    read = [spec.kind for spec in specs if any(s.env == name for s in spec.settings)]
    alias = [(spec.kind, s.env) for spec in specs for s in spec.settings if name in s.aliases]
    retired = [(spec.kind, r) for spec in specs for r in spec.retired if r.env == name]
    if read:
        return "read by " + ", ".join(f"`{k}`" for k in read)
    if alias:
        kinds = ", ".join(dict.fromkeys(f"`{k}`" for k, _ in alias))
        return f"read by {kinds} as `{alias[0][1]}`"
    if retired:
        kind, r = retired[0]
        harmless = f" unless {' / '.join(sorted(r.harmless))}" if r.harmless else ""
        return f"refused by `{kind}`{harmless}: {_cell(r.instead)}"
    raise KeyError(f"{name}: neither read nor refused")


def show(resolved: Resolved[Any]) -> list[str]:
    """`NAME=value  (source[ from origin])` per setting, for `streamfill config show`."""
    out = []
    for e in resolved.values.values():
        where = e.source if not e.origin or e.origin == e.setting.env else f"{e.source}: {e.origin}"
        out.append(f"{e.setting.env}={e.shown()}  ({where})")
    return out
