"""Gap recovery: `streamfill resync` (fresh snapshots of named repos) and `streamfill firehose
replay` (a window of a relay's firehose read again, workers/control/firehose_replay.py).

Both write what the workers would (RepoJobs to repo_backfill, events to firehose_live), through
the same producers: partitioned by DID when STREAMFILL_PARTITIONS > 1, blocking at the
high-water mark. The indexer's rev gate makes a replayed event harmless. Both are audited.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis

from atp import InvalidDid
from atp.syntax import validate_did
from schemas import RepoJob, contract_for
from streams import Keys, PartitionedProducer, ProducerConfig, StreamNames
from streams.admin import audit
from workers._env import redis_session
from workers._errors import SettingError
from workers._partitions import partitioning
from workers._specs import load
from workers.control.auditlog import trim_audit
from workers.settings import (
    BOOL,
    FLOAT,
    HTTP_URL,
    INT,
    Setting,
    Spec,
    add_flags,
    allow_private_hosts_setting,
    partition_settings,
    positive_number,
    redis_settings,
    throttle_rule,
    throttle_settings,
)

AUDITED_DIDS = 100  # an audit entry names this many DIDs, and counts the rest
_JOBS = contract_for(StreamNames.REPO_BACKFILL)


@dataclass(frozen=True)
class RecoveryConfig:
    """What `resync` and `firehose replay` read."""

    redis_url: str | None = None
    prefix: str = ""
    partitions: int = 1
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000
    high_water_mark: int = 100_000
    plc_url: str = "https://plc.directory"
    verify_signatures: bool = True
    allow_private_hosts: bool = False
    audit_retention_days: float = 90.0
    # `firehose replay` yields to live traffic as backfill production does (streams/_throttle.py).
    throttle: bool = True
    throttle_live_lag_s: float = 2.0
    throttle_resume_lag_s: float = 1.0


SPEC: Spec[RecoveryConfig] = Spec(
    "recovery",
    RecoveryConfig,
    (
        *redis_settings(),
        *partition_settings(),
        Setting(
            "high_water_mark",
            "INGESTER_HIGH_WATER_MARK",
            INT,
            "backpressure: writing to repo_backfill or firehose_live blocks while its backlog is at "
            "this mark",
            minimum=1,
            maximum=1_000_000_000,
            live=True,
        ),
        Setting(
            "plc_url", "PLC_URL", HTTP_URL, "PLC directory, to resolve DIDs for firehose signature checks"
        ),
        Setting("verify_signatures", "INGESTER_VERIFY_SIGNATURES", BOOL, "verify replayed commit signatures"),
        allow_private_hosts_setting(),
        Setting(
            "audit_retention_days",
            "AUDIT_RETENTION_DAYS",
            FLOAT,
            "audit entries older than this many days (Redis time) are trimmed; never newer ones",
            minimum=1,
            maximum=36_500,
        ),
        *throttle_settings(),
    ),
    rules=(throttle_rule(),),
    title="gap recovery: `streamfill resync`, `streamfill firehose replay`",
)

Action = Callable[[aioredis.Redis, RecoveryConfig, argparse.Namespace], Awaitable[int]]


def _runner(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        config = load(SPEC, args).config

        async def go() -> int:
            async with redis_session(config.redis_url) as redis:
                await trim_audit(redis, Keys(config.prefix), config.audit_retention_days)
                return await action(redis, config, args)

        return anyio.run(go)

    return run


def register(sub: Any) -> None:
    text = "enqueue fresh snapshots of named repos into repo_backfill (audited)"
    p = sub.add_parser("resync", help=text, description=text)
    p.add_argument("--did", action="append", default=[], metavar="DID", help="a repo to resync (repeatable)")
    p.add_argument("--dids-file", type=Path, metavar="FILE", help="DIDs, one a line (# comments)")
    p.add_argument("--reason", required=True, help="why (kept in the audit stream)")
    add_flags(p, SPEC)
    p.set_defaults(func=_runner(_resync))
    text = "re-read a window of a relay's firehose into firehose_live (audited)"
    firehose = sub.add_parser("firehose", help=text, description=text)
    ops = firehose.add_subparsers(dest="op", metavar="OPERATION", title="operations", help="what to do")
    ops.required = True
    p = ops.add_parser("replay", help=text, description=text + ": the relay must still serve it")
    p.add_argument("--relay", required=True, metavar="HOST", help="the relay (https://host or host)")
    p.add_argument("--from-seq", required=True, type=int, metavar="A", help="first seq of the window")
    p.add_argument("--to-seq", required=True, type=int, metavar="B", help="last seq of the window")
    p.add_argument(
        "--rate", type=positive_number, metavar="N", help="at most N frames a second (default: no limit)"
    )
    p.add_argument("--reason", default="", help="why (kept in the audit stream)")
    add_flags(p, SPEC)
    p.set_defaults(func=_runner(_firehose_replay))


def read_dids(args: argparse.Namespace) -> list[str]:
    """`--did` and `--dids-file` DIDs, checked (AT Protocol syntax), duplicates dropped."""
    found = [(f"--did {d}", d.strip()) for d in args.did]
    if args.dids_file is not None:
        try:
            lines = args.dids_file.read_text().splitlines()
        except OSError as exc:
            raise SettingError(f"--dids-file {args.dids_file}: {exc.strerror or exc}") from None
        for n, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if text:
                found.append((f"{args.dids_file}:{n}", text))
    if not found:
        raise SettingError("resync: give --did DID (repeatable) or --dids-file FILE")
    for where, did in found:
        try:
            validate_did(did)
        except InvalidDid:
            raise SettingError(f"{where}: {did!r} is not a DID") from None
    return list(dict.fromkeys(did for _, did in found))


async def _resync(redis: aioredis.Redis, config: RecoveryConfig, args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise SettingError("--reason must say why")
    dids = read_dids(args)
    ids = await resync(redis, config, dids, reason=args.reason.strip())
    print(f"streamfill: enqueued {len(ids)} resync jobs into repo_backfill")
    return 0


async def resync(redis: aioredis.Redis, config: RecoveryConfig, dids: list[str], *, reason: str) -> list[str]:
    """Enqueue a RepoJob (reason `resync`) per DID, then audit it; returns the entry ids."""
    keys = Keys(config.prefix)
    stream = keys.stream(StreamNames.REPO_BACKFILL)
    producer = PartitionedProducer(
        redis,
        ProducerConfig(stream, high_water=config.high_water_mark),
        partitioning(config.prefix, config.partitions),
        wait_replicas=config.wait_replicas,
        wait_timeout_ms=config.wait_timeout_ms,
    )
    ids: list[str] = []
    for start in range(0, len(dids), 500):
        chunk = dids[start : start + 500]
        jobs = [_JOBS.encode(RepoJob(did=d, host="resync", reason="resync")) for d in chunk]
        ids += await producer.send(jobs)
    await audit(redis, keys, "resync", reason=reason, count=len(dids), dids=dids[:AUDITED_DIDS])
    return ids


async def _firehose_replay(redis: aioredis.Redis, config: RecoveryConfig, args: argparse.Namespace) -> int:
    from workers.control.firehose_replay import replay_window

    if args.from_seq < 1 or args.to_seq < args.from_seq:
        raise SettingError(f"--from-seq {args.from_seq} --to-seq {args.to_seq}: not a window (1 <= A <= B)")
    result = await replay_window(redis, config, args.relay, args.from_seq, args.to_seq, rate=args.rate)
    await audit(
        redis,
        Keys(config.prefix),
        "firehose.replay",
        relay=args.relay,
        from_seq=args.from_seq,
        to_seq=args.to_seq,
        rate=args.rate,
        reason=args.reason,
        frames=result.frames,
        entries=result.entries,
    )
    window = f"seq {args.from_seq}..{result.last_seq} of {args.relay}"
    print(
        f"streamfill: replayed {window}: {result.frames} frames, {result.entries} entries into firehose_live"
    )
    return 0
