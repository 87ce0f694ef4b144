"""`streamfill audit [--since DURATION] [--action NAME] [--json]` and `audit export FILE`
(entries older than AUDIT_RETENTION_DAYS are trimmed first: workers/control/auditlog.py)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from streams import Keys
from workers._errors import EdgeError, SettingError
from workers.control.auditlog import read_audit, redis_now_ms
from workers.control.cli import command
from workers.control.overrides import parse_duration


def register(sub: Any) -> None:
    text = "read the audit stream: who changed what, when"
    p = command(sub, "audit", text, _audit)
    p.add_argument("--since", metavar="DURATION", help="only the last DURATION (30m, 2h, 7d)")
    p.add_argument("--action", metavar="NAME", help="only this action (e.g. config.set, groups.reset)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "export", nargs="?", choices=("export",), help="write the entries to FILE as JSON lines instead"
    )
    p.add_argument("file", nargs="?", type=Path, metavar="FILE", help="where `export` writes")


async def _audit(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    since_ms = None
    if args.since:
        try:
            since_ms = await redis_now_ms(redis) - int(parse_duration(args.since) * 1000)
        except ValueError as exc:
            raise SettingError(f"--since: {exc}") from None
    if args.export and args.file is None:
        raise SettingError("audit export needs a FILE")
    entries = await read_audit(redis, keys, since_ms=since_ms, action=args.action)
    if args.export:
        try:
            with args.file.open("w") as f:
                f.writelines(json.dumps(e) + "\n" for e in entries)
        except OSError as exc:
            raise EdgeError(f"audit export: cannot write {args.file}: {exc.strerror or exc}") from None
        print(f"streamfill: wrote {len(entries)} audit entries to {args.file}")
        return 0
    for e in entries:
        if args.json:
            print(json.dumps(e))
        else:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e["at_ms"] / 1000))
            print(f"{when}  {e['action']:<20} {e['operator']:<12} {json.dumps(e['args'])}")
    return 0
