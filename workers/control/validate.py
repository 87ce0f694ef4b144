"""Checking live overrides before they are staged: known names, live-tunable, type and bounds,
and the rules across settings of every worker kind that reads them.

Rules are checked with the values this environment gives the other settings of a rule (and the
overrides already active): a low-water mark above the high-water mark is refused here. A worker
whose own environment makes an override break a rule refuses it by itself (workers/control/live.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from workers._errors import SettingError
from workers.settings import Setting, Spec, Values


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`NAME=VALUE` texts as a dict; SettingError for one without `=` or given twice."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SettingError(f"{pair!r} is not NAME=VALUE")
        if name in out:
            raise SettingError(f"{name} is given twice")
        out[name] = value.strip()
    return out


def live_settings(specs: tuple[Spec[Any], ...]) -> dict[str, Setting]:
    """Every live-tunable setting, by environment name."""
    return {s.env: s for spec in specs for s in spec.settings if s.live}


def check_overrides(
    specs: tuple[Spec[Any], ...],
    wanted: Mapping[str, str],
    environ: Mapping[str, str],
    active: Mapping[str, str],
) -> dict[str, str]:
    """`wanted` by canonical environment name, each value checked; SettingError for the first problem."""
    out: dict[str, str] = {}
    for name, text in wanted.items():
        setting = _find(specs, name)
        setting.parse(text, setting.env)
        out[setting.env] = text
    for spec in specs:
        _check_rules(spec, out, environ, active)
    return out


def _find(specs: tuple[Spec[Any], ...], name: str) -> Setting:
    reading = [s for spec in specs for s in spec.settings if name in s.names]
    if not reading:
        known = sorted({s.env for spec in specs for s in spec.settings})
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SettingError(f"{name} is not a streamfill setting{hint}")
    if not all(s.live for s in reading):
        raise SettingError(f"{name} cannot be changed while workers run: restart them with it instead")
    return reading[0]


def _check_rules(
    spec: Spec[Any], wanted: Mapping[str, str], environ: Mapping[str, str], active: Mapping[str, str]
) -> None:
    touched = {s.attr for s in spec.settings if s.env in wanted}
    if not touched:
        return
    values = spec.defaults()
    for s in spec.settings:
        text = wanted.get(s.env) or active.get(s.env) or _environment(s, environ)
        if text is not None:
            try:
                values[s.attr] = s.parse(text, s.env)
            except SettingError:
                continue  # this environment's own problem, not the override's
    view = Values(spec, values)
    for rule in spec.rules:
        if rule.attrs and touched.intersection(rule.attrs):
            problem = rule.check(view)
            if problem:
                raise SettingError(f"{problem} (for {spec.kind})")


def _environment(s: Setting, environ: Mapping[str, str]) -> str | None:
    return next((environ[n] for n in s.names if environ.get(n, "").strip()), None)
