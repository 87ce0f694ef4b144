"""Lua scripts by EVALSHA alone, loaded on NOSCRIPT: the one way the runtime runs its scripts.

redis-py's `Script` in a pipeline sends `SCRIPT EXISTS` before every pipeline that holds one (a
round trip per batch written). Here the call is a plain `EVALSHA` (its SHA-1 computed locally);
a node that does not have the script (a new or promoted master, a flushed cache) answers
NOSCRIPT, and the call is sent again, once, after `SCRIPT LOAD` (on a cluster client redis-py
sends that to every master).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

# What a pipeline step queues after the script calls, given the indexes of the calls it sends;
# it returns the function that takes the replies of what it queued.
After = Callable[[Any, Sequence[int]], Callable[[list[Any]], None]]


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script's body and SHA-1."""

    body: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.body.encode(), usedforsecurity=False).hexdigest())

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[bytes | str | int]) -> None:
        """Queue `EVALSHA` in `pipe` (on a cluster pipeline it is routed by its keys)."""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    async def load(self, redis: aioredis.Redis) -> None:
        """SCRIPT LOAD the body (on a cluster client: on every master)."""
        await redis.script_load(self.body)

    async def __call__(
        self, redis: aioredis.Redis, keys: Sequence[str], args: Sequence[bytes | str | int]
    ) -> Any:
        """One `EVALSHA`, loading the script and calling again on NOSCRIPT."""
        reply = await run_scripts(redis, [ScriptCall(self, keys, args)])
        return reply[0]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One call of `script` with its keys and arguments."""

    script: Script
    keys: Sequence[str]
    args: Sequence[bytes | str | int]


async def run_scripts(
    redis: aioredis.Redis, calls: Sequence[ScriptCall], after: After | None = None
) -> list[Any]:
    """Send `calls` (EVALSHA each) and what `after` queues, in one pipeline; the calls' replies.

    Calls answered NOSCRIPT are sent again, once, after their scripts are loaded, with what `after`
    queues for them (its replies are read again: a backlog read after the rewrite). The replies of
    `after` are handed over before the calls' are looked at; a call's error reply is raised.
    """
    results: list[Any] = [None] * len(calls)
    todo: Sequence[int] = range(len(calls))
    for attempt in range(2):
        async with redis.pipeline(transaction=False) as pipe:
            for i in todo:
                calls[i].script.queue(pipe, calls[i].keys, calls[i].args)
            take = after(pipe, todo) if after is not None else None
            replies = await pipe.execute(raise_on_error=False)
        if take is not None:
            take(replies[len(todo) :])
        again = []
        for i, reply in zip(todo, replies, strict=False):
            if isinstance(reply, NoScriptError) and attempt == 0:
                again.append(i)
            elif isinstance(reply, Exception):
                raise reply
            else:
                results[i] = reply
        if not again:
            return results
        for script in {calls[i].script.sha: calls[i].script for i in again}.values():
            await script.load(redis)
        todo = again
    raise NoScriptError("NOSCRIPT after SCRIPT LOAD")
