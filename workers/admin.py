"""Operator commands: status, groups reset/drain, consumers prune, trim, dlq list/replay/purge."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import redis.asyncio as aioredis

from streams import AdminError, Keys
from streams.admin import (
    GroupInfo,
    dlq_list,
    dlq_purge,
    dlq_replay,
    drain,
    partitions_of,
    prune_consumers,
    reset_group,
    trim_stream,
)
from workers._env import redis_session
from workers._specs import load
from workers._throttle import replay_gate
from workers.settings import (
    FLOAT,
    Setting,
    Spec,
    add_flags,
    positive_integer,
    positive_number,
    ready_settings,
    redis_settings,
    throttle_rule,
    throttle_settings,
)
from workers.status import run_status

Action = Callable[[aioredis.Redis, Keys, argparse.Namespace], Awaitable[int]]


@dataclass(frozen=True)
class AdminConfig:
    """What the operator commands read: where Redis is, and the key prefix."""

    redis_url: str | None = None
    prefix: str = ""
    # `dlq replay` yields to live traffic as backfill production does (streams/_throttle.py).
    throttle: bool = True
    throttle_live_lag_s: float = 2.0
    throttle_resume_lag_s: float = 1.0
    audit_retention_days: float = 90.0
    ready_max_lag_s: float = 10.0


SPEC: Spec[AdminConfig] = Spec(
    "admin",
    AdminConfig,
    (
        *redis_settings(),
        *throttle_settings(),
        Setting(
            "audit_retention_days",
            "AUDIT_RETENTION_DAYS",
            FLOAT,
            "audit entries older than this many days (Redis time) are trimmed by the control "
            "commands (`audit`, `config`, `workers`, `resync`, `firehose replay`); never newer ones",
            minimum=1,
            maximum=36_500,
        ),
        *ready_settings(),
    ),
    rules=(throttle_rule(),),
    title="operator commands: `status`, `groups`, `consumers`, `trim`, `dlq`, `config set`, `audit`, ...",
)

_STREAM = "stream name, without the key prefix (e.g. repo_backfill)"
_GROUP = "consumer group (e.g. repo_backfill_group)"


def register(sub: Any) -> None:
    p = _command(sub, "status", "streams, groups, consumers, lag, pending, DLQs")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON document: streams, ledgers, campaigns, throttled, workers, readiness",
    )
    p.add_argument(
        "--partitions",
        action="store_true",
        help="a partitioned stream's partitions too, each with its groups (totals otherwise)",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="refresh every second (in place on a terminal, a new report each time otherwise)",
    )
    p.set_defaults(func=_runner(run_status))

    groups = _group(sub, "groups", "re-point or drain a consumer group")
    p = _command(groups, "reset", "set a group's last-delivered id (0, $ or an id); audited")
    _stream_group(p)
    p.add_argument("--to", required=True, help="0 (replay everything), $ (skip to the end) or an entry id")
    p.set_defaults(func=_runner(_reset))
    p = _command(groups, "drain", "wait until a group's lag and pending are 0")
    _stream_group(p)
    p.add_argument(
        "--timeout",
        type=positive_number,
        default=600.0,
        metavar="S",
        help="give up (exit 1) after S seconds (default 600)",
    )
    p.set_defaults(func=_runner(_drain))

    consumers = _group(sub, "consumers", "consumer clean-up")
    p = _command(consumers, "prune", "delete idle consumers that have nothing pending; audited")
    _stream_group(p)
    p.add_argument(
        "--idle",
        type=positive_number,
        required=True,
        metavar="S",
        help="only consumers idle for S seconds or more",
    )
    p.set_defaults(func=_runner(_prune))

    p = _command(sub, "trim", "trim the entries every group has read and acknowledged; audited")
    p.add_argument("stream", help=_STREAM)
    p.set_defaults(func=_runner(_trim))

    p = _command(sub, "dlq", "list, replay or purge a dead-letter stream (<stream>:dlq)")
    p.add_argument(
        "op",
        choices=["list", "replay", "purge"],
        help="list entries as JSON lines; replay them onto the stream (audited); purge the DLQ (audited)",
    )
    p.add_argument("stream", help=_STREAM + "; its DLQ is <stream>:dlq")
    p.add_argument(
        "--count",
        type=positive_integer,
        default=100,
        metavar="N",
        help="entries to list or replay (default 100)",
    )
    p.add_argument(
        "--rate",
        type=per_second,
        default=None,
        metavar="N/s",
        help="replay at most N entries a second (default: no limit); a replay also slows down and "
        "pauses while live lag is high (THROTTLE_*)",
    )
    p.set_defaults(func=_runner(_dlq))


def per_second(text: str) -> float:
    """An argparse type: a rate, `N/s` or `N`, N > 0."""
    try:
        return positive_number(text.removesuffix("/s"))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a rate N/s with N > 0, got {text!r}") from None


def _command(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
    add_flags(p, SPEC)
    return p


def _group(sub: Any, name: str, text: str) -> Any:
    operations = sub.add_parser(name, help=text, description=text).add_subparsers(
        dest="op", metavar="OPERATION", title="operations", help="what to do"
    )
    operations.required = True
    return operations


def _stream_group(p: argparse.ArgumentParser) -> None:
    p.add_argument("stream", help=_STREAM)
    p.add_argument("group", help=_GROUP)


def _runner(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        config = load(SPEC, args).config

        async def go() -> int:
            async with redis_session(config.redis_url) as redis:
                args.config = config
                return await action(redis, Keys(config.prefix), args)

        try:
            return anyio.run(go)
        except AdminError as exc:
            print(f"streamfill: {exc}", file=sys.stderr)
            return 2

    return run


async def _reset(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    for stream in await partitions_of(redis, keys, args.stream):  # every partition, or the stream
        await reset_group(redis, keys, stream, args.group, args.to)
        print(f"{stream} {args.group}: last-delivered id set to {args.to}")
    return 0


async def _drain(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    for stream in await partitions_of(redis, keys, args.stream):  # one after the other, one deadline

        async def progress(g: GroupInfo, stream: str = stream) -> None:
            lag = "?" if g.lag is None else g.lag
            print(
                f"\r{stream} {g.name}: lag={lag} pending={g.pending}   ", end="", file=sys.stderr, flush=True
            )

        left = max(0.0, deadline - time.monotonic())
        ok = await drain(redis, stream, args.group, timeout_s=left, progress=progress)
        print(file=sys.stderr)
        if not ok:
            print(f"streamfill: {stream} {args.group} not drained after {args.timeout}s", file=sys.stderr)
            return 1
        print(f"{stream} {args.group}: drained")
    return 0


async def _prune(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    removed: list[str] = []
    for stream in await partitions_of(redis, keys, args.stream):
        removed += await prune_consumers(redis, keys, stream, args.group, idle_s=args.idle)
    print(f"removed {len(removed)} consumer(s): {', '.join(removed) or '-'}")
    return 0


async def _trim(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    for stream in await partitions_of(redis, keys, args.stream):
        plan = await trim_stream(redis, keys, stream)
        if plan.minid is None:
            print(f"trimmed nothing from {stream}: it has no consumer group, so nothing says what was read")
            continue
        print(f"trimmed {plan.removed} read and acknowledged entries from {stream}")
        if await redis.xlen(stream):
            why = "has not acknowledged" if plan.reason == "pending" else "has not read"
            print(f"kept everything from {plan.minid}: group {plan.held_by} {why} it")
    return 0


async def _dlq(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    logical = keys.stream(args.stream)
    streams = await partitions_of(redis, keys, args.stream)
    if streams != [logical] and await redis.exists(keys.dlq(logical)):
        # Entries refused before they were written to a partition (the backfiller's invalid
        # records): listed and purged with the partitions' DLQs; a replay would bypass routing.
        if args.op != "replay":
            streams.append(logical)
    if not any([await redis.exists(s) or await redis.exists(keys.dlq(s)) for s in streams]):
        raise AdminError(f"no such stream: {logical}")
    left = args.count
    for stream in streams:
        if args.op == "list":
            rows = await dlq_list(redis, stream, count=left) if left > 0 else []
            left -= len(rows)
            for entry_id, fields in rows:
                print(json.dumps({"id": entry_id, **fields}))
        elif args.op == "replay":
            gate = await replay_gate(redis, keys, args.config, args.rate)
            replayed = await dlq_replay(redis, keys, stream, count=left, gate=gate) if left > 0 else 0
            left -= replayed
            print(f"replayed {replayed} entries onto {stream}")
        else:
            print(f"purged {await dlq_purge(redis, keys, stream)} entries from {keys.dlq(stream)}")
    return 0
