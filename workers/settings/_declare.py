"""Declaring settings: one `Setting` per configuration field, `Rule`s across settings, names from
other deployments that are refused (`Retired`), and a worker kind's `Spec` that holds them.

A setting's default is the default of its config dataclass field, so it is written once; the
declaration adds the flag, the environment name and its aliases, the type, the bounds and the
help text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from workers._errors import SettingError
from workers.settings._kinds import Kind, masked

C = TypeVar("C")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number(value: object) -> float | None:
    """A numeric value as a float; None for anything else (an unset optional value)."""
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Setting:
    """One setting: where it is read from, what it may be, what it means."""

    attr: str  # the config field
    env: str  # the environment name
    kind: Kind
    help: str
    flag: str | None = None  # default `--attr-with-dashes`; "" for none
    aliases: tuple[str, ...] = ()  # other environment names read (rsky deployments' names)
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # unset means None (e.g. no metrics server)
    live: bool = False  # may be overridden while workers run (control plane)
    secret: bool = False  # a URL whose password is masked wherever it is shown
    roles: frozenset[str] | None = None  # the subcommands that read it (None: all)
    shown_default: str | None = None  # a default computed at start, as help shows it

    @property
    def flag_name(self) -> str | None:
        if self.flag == "":
            return None
        return self.flag or "--" + self.attr.replace("_", "-")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.env, *self.aliases)

    def allowed(self) -> str:
        """What the setting accepts, as error messages and help show it."""
        article = "an" if self.kind.name[0] in "aeiou" else "a"
        if not self.kind.numeric or (self.minimum is None and self.maximum is None):
            return ""
        if self.minimum is not None and self.maximum is not None:
            return f"{article} {self.kind.name} from {_num(self.minimum)} to {_num(self.maximum)}"
        if self.minimum is not None:
            return f"{article} {self.kind.name} >= {_num(self.minimum)}"
        return f"{article} {self.kind.name} <= {_num(self.maximum or 0)}"

    def parse(self, text: str, origin: str) -> object:
        """The value of `text`, read from `origin` (a flag or an environment name)."""
        if self.optional and not text.strip():
            return None
        try:
            value = self.kind.parse(text)
        except ValueError as exc:
            raise SettingError(self._problem(str(exc), text, origin)) from None
        self.check(value, origin, text)
        return value

    def check(self, value: object, origin: str, text: str | None = None) -> None:
        """Refuse a value outside the bounds."""
        number = _number(value)
        if number is None or not self.kind.numeric:
            return
        low, high = self.minimum, self.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            shown = text if text is not None else self.kind.show(value)
            raise SettingError(self._problem(self.allowed(), shown, origin))

    def _problem(self, allowed: str, text: str, origin: str) -> str:
        shown = masked(text) if self.secret else text
        where = "" if origin == self.env else f" (from {origin})"
        return f"{self.env} must be {allowed}, got {shown!r}{where}"


class Values(Mapping[str, object]):
    """Candidate values of a spec by field, with the names rules put in their messages."""

    def __init__(self, spec: Spec[Any], values: Mapping[str, object]) -> None:
        self._spec = spec
        self._values = dict(values)

    def __getitem__(self, attr: str) -> object:
        return self._values[attr]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def name(self, attr: str) -> str:
        return self._spec.setting(attr).env

    def shown(self, attr: str) -> str:
        """`NAME=value`, as a rule's message names a setting."""
        setting = self._spec.setting(attr)
        text = setting.kind.show(self._values[attr])
        return f"{setting.env}={masked(text) if setting.secret else text}"


@dataclass(frozen=True)
class Rule:
    """A rule across settings: `check` returns the problem, or None when the values are allowed.

    `describe` may name fields as `{field}` (the reference shows their environment names);
    `attrs` are the fields it reads: a subcommand that does not read them all skips it.
    """

    describe: str
    check: Callable[[Values], str | None]
    attrs: tuple[str, ...] = ()


def below(low: str, high: str) -> Rule:
    """`low` (optional) must be below `high`, e.g. a low-water mark under its high-water mark."""

    def check(v: Values) -> str | None:
        lo, hi = _number(v[low]), _number(v[high])
        if lo is not None and hi is not None and lo >= hi:
            return f"{v.shown(low)} must be below {v.shown(high)}"
        return None

    return Rule(f"{{{low}}} < {{{high}}}", check, (low, high))


def at_most(small: str, large: str) -> Rule:
    """`small` must not exceed `large`."""

    def check(v: Values) -> str | None:
        lo, hi = _number(v[small]), _number(v[large])
        if lo is not None and hi is not None and lo > hi:
            return f"{v.shown(small)} must not exceed {v.shown(large)}"
        return None

    return Rule(f"{{{small}}} <= {{{large}}}", check, (small, large))


def differ(a: str, b: str) -> Rule:
    """`a` and `b` must not be equal (e.g. two streams that must not be the same key)."""

    def check(v: Values) -> str | None:
        return f"{v.shown(a)} and {v.shown(b)} must differ" if v[a] == v[b] else None

    return Rule(f"{{{a}}} != {{{b}}}", check, (a, b))


@dataclass(frozen=True)
class Retired:
    """A name from another deployment (rsky) that streamfill refuses, saying what to use instead."""

    env: str
    instead: str
    harmless: frozenset[str] = frozenset()  # values asking for what streamfill does anyway


@dataclass(frozen=True)
class Spec(Generic[C]):
    """Every setting of one worker kind, with its config dataclass, rules and refused names."""

    kind: str  # the command: "backfiller"
    config: type[C]
    settings: tuple[Setting, ...]
    rules: tuple[Rule, ...] = ()
    retired: tuple[Retired, ...] = ()
    title: str = ""  # the reference's heading; default `streamfill <kind>`

    def __post_init__(self) -> None:
        fields = {f.name for f in dataclasses.fields(self.config)}  # type: ignore[arg-type]
        attrs = [s.attr for s in self.settings]
        names = [n for s in self.settings for n in s.names]
        if set(attrs) != fields or len(attrs) != len(set(attrs)) or len(names) != len(set(names)):
            raise TypeError(f"{self.kind}: settings do not match the fields of {self.config.__name__}")

    def defaults(self) -> dict[str, object]:
        """The config dataclass's field defaults, by field."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self.config):  # type: ignore[arg-type]
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                raise TypeError(f"{self.config.__name__}.{f.name} has no default")
        return out

    def setting(self, name: str) -> Setting:
        """The setting with this field, environment name or alias."""
        for s in self.settings:
            if name == s.attr or name in s.names:
                return s
        raise KeyError(name)

    def describe(self, rule: Rule) -> str:
        """A rule's description with its `{field}` placeholders replaced by environment names."""
        return rule.describe.format_map({s.attr: s.env for s in self.settings})

    def used(self, role: str | None = None) -> tuple[Setting, ...]:
        """The settings that `role` (a subcommand) reads."""
        return tuple(s for s in self.settings if role is None or s.roles is None or role in s.roles)

    def check(
        self, values: Mapping[str, object], origins: Mapping[str, str] | None = None, role: str | None = None
    ) -> None:
        """Refuse values outside their bounds, then any rule they break (first problem wins).

        `values` may be any candidate set (a live override checks its own before applying it).
        """
        used = {s.attr for s in self.used(role)}
        for s in self.settings:
            if s.attr in values and s.attr in used:
                s.check(values[s.attr], (origins or {}).get(s.attr, s.env))
        view = Values(self, values)
        for rule in self.rules:
            if rule.attrs and not used.issuperset(rule.attrs):
                continue
            problem = rule.check(view)
            if problem:
                raise SettingError(problem)
