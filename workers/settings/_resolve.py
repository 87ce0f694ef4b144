"""Reading a spec's settings in one place: live override > flag > environment > default.

Every effective value keeps where it came from, so that `streamfill config show`, the start-up
log line and (later) the control plane can say why a worker runs with the value it has.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from workers._errors import SettingError
from workers.settings._declare import Setting, Spec
from workers.settings._kinds import masked

C = TypeVar("C")

Source = Literal["default", "env", "flag", "override"]
Flags = argparse.Namespace | Mapping[str, object] | None


@dataclass(frozen=True)
class Effective:
    """One setting's value and where it came from (`origin`: the flag or variable; "" for a default)."""

    setting: Setting
    value: object
    source: Source
    origin: str

    def shown(self) -> str:
        """The value as text; passwords in URLs masked, computed defaults described."""
        if self.source == "default" and self.value is None and self.setting.shown_default:
            return self.setting.shown_default
        text = self.setting.kind.show(self.value)
        return masked(text) if self.setting.secret else text


@dataclass(frozen=True)
class Resolved(Generic[C]):
    """A spec's effective settings: the frozen config, and each value with its source."""

    spec: Spec[C]
    config: C
    values: Mapping[str, Effective]

    def summary(self) -> dict[str, str]:
        """`{NAME: "value (source)"}`, for the start-up log line."""
        return {e.setting.env: f"{e.shown()} ({e.source})" for e in self.values.values()}


def resolve(
    spec: Spec[C],
    *,
    flags: Flags = None,
    environ: Mapping[str, str],
    role: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Resolved[C]:
    """Read every setting `role` uses, check bounds and rules, and build the config.

    `overrides` are live overrides by environment name (the control plane's); only settings
    declared `live` accept one. Settings another role reads keep their defaults unread.
    """
    defaults = spec.defaults()
    used = {s.attr for s in spec.used(role)}
    chosen: dict[str, Effective] = {}
    for s in spec.settings:
        if s.attr in used:
            chosen[s.attr] = _one(s, defaults[s.attr], flags, environ, overrides or {})
        else:
            chosen[s.attr] = Effective(s, defaults[s.attr], "default", "")
    values = {attr: e.value for attr, e in chosen.items()}
    spec.check(values, {attr: e.origin or e.setting.env for attr, e in chosen.items()}, role)
    return Resolved(spec, spec.config(**values), chosen)


def _one(
    s: Setting, default: object, flags: Flags, environ: Mapping[str, str], overrides: Mapping[str, str]
) -> Effective:
    override = next((overrides[n] for n in s.names if n in overrides), None)
    if override is not None:
        if not s.live:
            raise SettingError(
                f"{s.env} cannot be overridden while workers run: restart them with it instead"
            )
        return Effective(s, s.parse(override, "a live override"), "override", "override")
    given = _flag(s, flags)
    if given is not None:
        origin = s.flag_name or s.attr
        if isinstance(given, str):
            return Effective(s, s.parse(given, origin), "flag", origin)
        s.check(given, origin)  # already typed (a --x/--no-x flag)
        return Effective(s, given, "flag", origin)
    found = _environment(s, environ)
    if found is not None:
        name, text = found
        return Effective(s, s.parse(text, name), "env", name)
    return Effective(s, default, "default", "")


def _flag(s: Setting, flags: Flags) -> object:
    if flags is None:
        return None
    if isinstance(flags, argparse.Namespace):
        return getattr(flags, s.attr, None)
    return flags.get(s.attr)


def _environment(s: Setting, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(name, text) of the variable that sets `s`; an empty variable counts as unset."""
    found = [(name, environ[name]) for name in s.names if environ.get(name, "").strip()]
    if not found:
        return None
    if len({text.strip() for _, text in found}) > 1:
        names = " and ".join(name for name, _ in found)
        raise SettingError(f"{names} are both set, to different values: keep only {s.env}")
    return found[0]
