"""`streamfill config set|revert|show|history` (live overrides) and `streamfill workers` (heartbeats)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import redis.asyncio as aioredis

from streams import Keys
from streams.admin import operator_name
from workers._env import redis_session
from workers._errors import SettingError
from workers._specs import load, specs
from workers.admin import SPEC as ADMIN_SPEC
from workers.control.agent import heartbeats
from workers.control.auditlog import read_audit, trim_audit
from workers.control.overrides import Override, OverrideStore, window
from workers.control.validate import check_overrides, live_settings, parse_assignments
from workers.settings import add_flags, masked

Action = Callable[[aioredis.Redis, Keys, argparse.Namespace], Awaitable[int]]


def runner(action: Action) -> Callable[[argparse.Namespace], int]:
    """A command that runs `action` against REDIS_URL under STREAMFILL_PREFIX (audit entries older
    than AUDIT_RETENTION_DAYS are trimmed first)."""

    def run(args: argparse.Namespace) -> int:
        config = load(ADMIN_SPEC, args).config

        async def go() -> int:
            async with redis_session(config.redis_url) as redis:
                keys = Keys(config.prefix)
                await trim_audit(redis, keys, config.audit_retention_days)
                return await action(redis, keys, args)

        return anyio.run(go)

    return run


def command(sub: Any, name: str, text: str, action: Action) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
    add_flags(p, ADMIN_SPEC)
    p.set_defaults(func=runner(action))
    return p


def register_config(ops: Any) -> None:
    """`config set`, `config revert`, `config history` (config_cli adds `show` and `reference`)."""
    live = ", ".join(sorted(live_settings(specs())))
    text = "override live-tunable settings of running workers for a while (audited)"
    p = command(ops, "set", text, _set)
    p.add_argument("assignments", nargs="+", metavar="NAME=VALUE", help=f"settings to override: {live}")
    p.add_argument(
        "--for", dest="window", required=True, metavar="DURATION", help="5s to 7d: 30s, 10m, 2h, 1d"
    )
    p.add_argument("--reason", required=True, help="why (kept in the audit stream)")
    p = command(
        ops, "revert", "end overrides now: workers return to their configured values (audited)", _revert
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="settings whose override ends")
    p.add_argument("--all", action="store_true", help="every active override")
    p = command(ops, "history", "past and present overrides (from the audit stream)", _history)
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def register(sub: Any) -> None:
    """`streamfill workers`."""
    p = command(
        sub, "workers", "running workers (heartbeats): kind, name, host, pid, settings, statistics", _workers
    )
    p.add_argument("--json", action="store_true", help="one JSON document (a list of heartbeats)")


async def _set(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    try:
        seconds = window(args.window)
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    if not args.reason.strip():
        raise SettingError("--reason must say why")
    store = OverrideStore(redis, keys)
    _, active = await store.active()
    wanted = parse_assignments(args.assignments)
    checked = check_overrides(specs(), wanted, os.environ, {n: o.value for n, o in active.items()})
    staged = await store.set(checked, seconds, reason=args.reason.strip(), operator=operator_name())
    for o in staged:
        print(f"streamfill: {o.name}={o.value} for {args.window} (until {_when(o.until_ms)})")
    return 0


async def _revert(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    if bool(args.names) == bool(args.all):
        raise SettingError("config revert: name the settings, or say --all")
    removed = await OverrideStore(redis, keys).revert([] if args.all else args.names)
    if not removed:
        print("streamfill: no such override is active")
    for o in removed:
        print(f"streamfill: {o.name} reverted (was {o.value})")
    return 0


async def show_overrides(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    """Active overrides with time left, and every setting's effective value per kind."""
    store = OverrideStore(redis, keys)
    await store.sweep()
    now_ms, active = await store.active()
    effective = _effective(active)
    if args.json:
        doc = {
            "overrides": [o.to_json() | {"left_s": o.left_s(now_ms)} for o in active.values()],
            "effective": effective,
        }
        print(json.dumps(doc))
        return 0
    print("active overrides:" if active else "no active overrides")
    for o in active.values():
        print(f"  {o.name}={o.value}  {o.left_s(now_ms):.0f}s left  by {o.operator}: {o.reason}")
    for kind, values in effective.items():
        print(f"{kind}:")
        for name, e in values.items():
            live = ", live" if e["live"] else ""
            print(f"  {name}={e['value']}  ({e['source']}{live})")
    return 0


def _effective(active: dict[str, Override]) -> dict[str, dict[str, dict[str, object]]]:
    """{kind: {NAME: {value, source, live}}} of every setting, as this environment and the active
    overrides make it (each worker's own view is in its heartbeat: `streamfill workers`)."""
    out: dict[str, dict[str, dict[str, object]]] = {}
    for spec in specs():
        defaults = spec.defaults()
        for s in spec.settings:
            env = next((n for n in s.names if os.environ.get(n, "").strip()), None)
            if s.live and s.env in active:
                value, source = active[s.env].value, "override"
            elif env is not None:
                value, source = os.environ[env].strip(), "env"
            else:
                value, source = s.kind.show(defaults[s.attr]) or (s.shown_default or ""), "default"
            shown = masked(value) if s.secret else value
            out.setdefault(spec.kind, {})[s.env] = {"value": shown, "source": source, "live": s.live}
    return out


async def _history(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    await OverrideStore(redis, keys).sweep()  # a window that ended with no worker running is audited now
    for entry in await read_audit(redis, keys, action_prefix="config."):
        if args.json:
            print(json.dumps(entry))
        else:
            a = entry["args"]
            print(
                f"{_when(entry['at_ms'])}  {entry['action']:<14} {a.get('name')}={a.get('value')}  "
                f"until {_when(a.get('until_ms', 0))}  by {entry['operator']}: {a.get('reason', '')}"
            )
    return 0


async def _workers(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    beats = await heartbeats(redis, keys)
    if args.json:
        print(json.dumps(beats))
        return 0
    if not beats:
        print("no running workers (no heartbeat)")
    for b in beats:
        overrides = ", ".join(f"{k}={v}" for k, v in b.get("overrides", {}).items()) or "none"
        up = time.time() - float(b.get("started", time.time()))
        print(f"{b['kind']:<11} {b['name']}  {b['host']} pid {b['pid']}  v{b['version']}  up {up:.0f}s")
        print(
            f"            overrides: {overrides}" + (f"  REFUSED: {b['refused']}" if b.get("refused") else "")
        )
    return 0


def _when(ms: int | float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ms) / 1000))
