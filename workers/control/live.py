"""A worker's live settings: its configured values (flag > environment > default) with the live
overrides of the control plane applied, re-read every second.

Components read what can change through the callbacks registered with `on_change`; the config
object itself stays a frozen value. When an override's window ends (in Redis time), the next
poll finds it gone and the worker falls back to its configured values by itself.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from workers._errors import SettingError
from workers.control.overrides import OverrideStore
from workers.settings import Effective, Resolved, Spec, Values, resolve

C = TypeVar("C")

log = logging.getLogger("streamfill.control")

# Workers apply an override within 2 s of it being staged: polled at twice that rate.
POLL_S = 1.0


class LiveSettings(Generic[C]):
    """The effective settings of one worker, overrides included; `refresh` re-reads them."""

    def __init__(
        self,
        spec: Spec[C],
        *,
        flags: Mapping[str, object] | None,
        environ: Mapping[str, str],
        role: str | None = None,
    ) -> None:
        self._setup(spec, role, resolve(spec, flags=flags, environ=environ, role=role))

    def _setup(self, spec: Spec[C], role: str | None, base: Resolved[C]) -> None:
        self.spec = spec
        self.base = base
        self.resolved: Resolved[C] = base
        self.applied: dict[str, str] = {}  # the overrides in effect, by environment name
        self.refused = ""  # why this worker refused the active overrides, if it did
        self._wanted: dict[str, str] = {}
        self._callbacks: list[Callable[[C], None]] = []
        self._names = {s.env for s in spec.used(role) if s.live}

    @classmethod
    def fixed(cls, spec: Spec[C], config: C) -> LiveSettings[C]:
        """Settings built by a caller (tests, the demo): overrides still apply over `config`."""
        live = cls.__new__(cls)
        values = {s.attr: getattr(config, s.attr) for s in spec.settings}
        chosen = {s.attr: Effective(s, values[s.attr], "default", "") for s in spec.settings}
        live._setup(spec, None, Resolved(spec, config, chosen))
        return live

    @property
    def config(self) -> C:
        return self.resolved.config

    def on_change(self, callback: Callable[[C], None]) -> None:
        """Call `callback(config)` whenever the effective settings change."""
        self._callbacks.append(callback)

    async def refresh(self, store: OverrideStore) -> bool:
        """Expire ended overrides, read the active ones, apply what changed; True if anything did."""
        now_ms, found = await store.snapshot()
        if any(o.until_ms <= now_ms for o in found):
            await store.sweep()
        wanted = {o.name: o.value for o in found if o.until_ms > now_ms and o.name in self._names}
        if wanted == self._wanted:
            return False
        self._wanted = wanted
        return self._apply(wanted)

    def _apply(self, wanted: dict[str, str]) -> bool:
        try:
            resolved = self._overlay(wanted)
            self.refused = ""
        except SettingError as exc:
            log.error("live override refused: keeping the configured values", extra={"error": str(exc)})
            self.refused = str(exc)
            resolved, wanted = self.base, {}
        changed = wanted != self.applied
        self.applied = wanted
        self.resolved = resolved
        if changed:
            log.info("live settings", extra={"overrides": wanted})
            for callback in self._callbacks:
                callback(resolved.config)
        return changed

    def _overlay(self, wanted: Mapping[str, str]) -> Resolved[C]:
        """The configured values with `wanted` over them, each checked (type, bounds) and with the
        rules that read an overridden setting; SettingError for the first problem."""
        chosen = dict(self.base.values)
        changed: dict[str, object] = {}
        for s in self.spec.settings:
            if s.env in wanted:
                changed[s.attr] = s.parse(wanted[s.env], "a live override")
                chosen[s.attr] = Effective(s, changed[s.attr], "override", "override")
        view = Values(self.spec, {attr: e.value for attr, e in chosen.items()})
        for rule in self.spec.rules:
            problem = rule.check(view) if changed.keys() & set(rule.attrs) else None
            if problem:
                raise SettingError(problem)
        return Resolved(self.spec, dataclasses.replace(self.base.config, **changed), chosen)  # type: ignore[type-var]

    def effective(self) -> dict[str, dict[str, Any]]:
        """{NAME: {value, source}} of every setting, for the heartbeat."""
        return {
            e.setting.env: {"value": e.shown(), "source": e.source} for e in self.resolved.values.values()
        }
