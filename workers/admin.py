"""Operator commands: status, groups reset/drain, consumers prune, trim, dlq list/replay/purge."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import redis.asyncio as aioredis

from streams import (
    AdminError,
    GroupInfo,
    Keys,
    StreamInfo,
    dlq_list,
    dlq_purge,
    dlq_replay,
    drain,
    list_streams,
    prune_consumers,
    reset_group,
    skip_ledgers,
    stream_info,
    trim,
)
from workers._env import env_str, keys_from_env, redis_session

Action = Callable[[aioredis.Redis, Keys, argparse.Namespace], Awaitable[int]]


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="streams, groups, consumers, lag, pending, DLQs")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--watch", action="store_true", help="refresh in place every second")
    _connection(p)
    p.set_defaults(func=_runner(_status))

    groups = sub.add_parser("groups", help="re-point or drain a consumer group").add_subparsers(dest="op")
    groups.required = True
    p = groups.add_parser("reset", help="set a group's last-delivered id (0, $ or an id)")
    _stream_group(p)
    p.add_argument("--to", required=True, help="0 (replay all), $ (skip to end) or an entry id")
    _connection(p)
    p.set_defaults(func=_runner(_reset))
    p = groups.add_parser("drain", help="wait until a group's lag and pending are 0")
    _stream_group(p)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    _connection(p)
    p.set_defaults(func=_runner(_drain))

    consumers = sub.add_parser("consumers", help="consumer clean-up").add_subparsers(dest="op")
    consumers.required = True
    p = consumers.add_parser("prune", help="delete idle consumers that have nothing pending")
    _stream_group(p)
    p.add_argument("--idle", type=float, required=True, help="idle seconds")
    _connection(p)
    p.set_defaults(func=_runner(_prune))

    p = sub.add_parser("trim", help="trim entries that every group has acknowledged")
    p.add_argument("stream")
    _connection(p)
    p.set_defaults(func=_runner(_trim))

    p = sub.add_parser("dlq", help="dead-letter streams")
    p.add_argument("op", choices=["list", "replay", "purge"])
    p.add_argument("stream")
    p.add_argument("--count", type=int, default=100)
    _connection(p)
    p.set_defaults(func=_runner(_dlq))


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", default=None, help="(env REDIS_URL; empty starts an embedded Valkey)")
    p.add_argument("--prefix", default=None, help="(env STREAMFILL_PREFIX)")


def _stream_group(p: argparse.ArgumentParser) -> None:
    p.add_argument("stream")
    p.add_argument("group")


def _runner(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def go() -> int:
            url = args.redis_url if getattr(args, "redis_url", None) is not None else env_str("REDIS_URL")
            prefix = getattr(args, "prefix", None)
            keys = Keys(prefix) if prefix is not None else keys_from_env()
            async with redis_session(url or None) as redis:
                return await action(redis, keys, args)

        try:
            return anyio.run(go)
        except AdminError as exc:
            print(f"streamfill: {exc}", file=sys.stderr)
            return 2

    return run


async def _status(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    while True:
        infos = [await stream_info(redis, s) for s in await list_streams(redis, keys)]
        if args.json:
            print(json.dumps([i.to_json() for i in infos]), flush=True)
        else:
            text = render_status(infos, await skip_ledgers(redis, keys))
            print(("\x1b[H\x1b[2J" if args.watch else "") + text, flush=True)
        if not args.watch:
            return 0
        await anyio.sleep(1)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def render_status(infos: list[StreamInfo], ledgers: dict[str, int] | None = None) -> str:
    lines = [time.strftime("%Y-%m-%d %H:%M:%S") + "  streamfill status", ""]
    if not infos:
        lines.append("(no streams)")
    for i in infos:
        lines.append(
            f"{i.stream}  length={i.length}  first={_age(i.first_age_s)} old  "
            f"last={_age(i.last_age_s)} old  dlq={i.dlq_length}"
        )
        for g in i.groups:
            lag = "?" if g.lag is None else str(g.lag)
            lines.append(
                f"  group {g.name}  lag={lag}  pending={g.pending}  last-delivered={g.last_delivered_id}"
            )
            for c in g.consumers:
                idle = _age(c.idle_ms / 1000)
                lines.append(f"    consumer {c.name}  pending={c.pending}  idle={idle}")
    for ledger, count in (ledgers or {}).items():
        if count:
            lines.append(f"{ledger}  {count} skipped range(s): streamfill ingester --retry-skipped")
    return "\n".join(lines)


async def _reset(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    stream = keys.stream(args.stream)
    await reset_group(redis, keys, stream, args.group, args.to)
    print(f"{stream} {args.group}: last-delivered id set to {args.to}")
    return 0


async def _drain(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    stream = keys.stream(args.stream)

    async def progress(g: GroupInfo) -> None:
        lag = "?" if g.lag is None else g.lag
        print(f"\r{stream} {g.name}: lag={lag} pending={g.pending}   ", end="", file=sys.stderr, flush=True)

    ok = await drain(redis, stream, args.group, timeout_s=args.timeout, progress=progress)
    print(file=sys.stderr)
    if not ok:
        print(f"streamfill: {stream} {args.group} not drained after {args.timeout}s", file=sys.stderr)
        return 1
    print(f"{stream} {args.group}: drained")
    return 0


async def _prune(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    removed = await prune_consumers(redis, keys, keys.stream(args.stream), args.group, idle_s=args.idle)
    print(f"removed {len(removed)} consumer(s): {', '.join(removed) or '-'}")
    return 0


async def _trim(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    removed = await trim(redis, keys, keys.stream(args.stream))
    print(f"trimmed {removed} acknowledged entries from {keys.stream(args.stream)}")
    return 0


async def _dlq(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    stream = keys.stream(args.stream)
    if not await redis.exists(stream) and not await redis.exists(f"{stream}:dlq"):
        raise AdminError(f"no such stream: {stream}")
    if args.op == "list":
        for entry_id, fields in await dlq_list(redis, stream, count=args.count):
            print(json.dumps({"id": entry_id, **fields}))
    elif args.op == "replay":
        print(f"replayed {await dlq_replay(redis, keys, stream, count=args.count)} entries onto {stream}")
    else:
        print(f"purged {await dlq_purge(redis, keys, stream)} entries from {stream}:dlq")
    return 0
