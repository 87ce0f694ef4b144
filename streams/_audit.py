"""The audit stream: every operator action that changes state appends `{action, operator, args, at}`."""

from __future__ import annotations

import getpass
import json
import os
import time

import redis.asyncio as aioredis

from streams._keys import Keys


async def audit(redis: aioredis.Redis, keys: Keys, action: str, **args: object) -> None:
    """Append one audit entry; the operator is $STREAMFILL_OPERATOR or the login name."""
    await redis.xadd(
        keys.audit(),
        {
            "action": action,
            "operator": operator_name(),
            "args": json.dumps(args, default=str),
            "at": f"{time.time():.3f}",
        },
    )


def operator_name() -> str:
    """Who runs this command, for audit entries: $STREAMFILL_OPERATOR, else the login name."""
    return os.environ.get("STREAMFILL_OPERATOR") or _login()


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"
