"""Errors at the edge become one line: servers that cannot be used, bad settings, closed pipes.

Connection and server errors are translated here, in one place, into `ServerError`s whose
message names the URL (password masked) and what to check. `run_command` prints any `EdgeError`
as `streamfill: <message>` and returns 2, or lets it through with its traceback under `--debug` /
STREAMFILL_DEBUG=1. A closed stdout (`streamfill status --json | head`) ends the command quietly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import redis.exceptions as rex

from streams import RedisUnavailable, UnsupportedServer
from workers._errors import EdgeError, ServerError
from workers.settings import masked

_REDIS_CHECK = "check REDIS_URL and that the server is running and reachable"
_PG_CHECK = "check DATABASE_URL and that the server is running and reachable"


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups; `[exc]` for a plain exception."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def _first(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> Any:
    return next((leaf for leaf in leaves(exc) if isinstance(leaf, kind)), None)


def reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words: from the OS error behind it when there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return "host name not found"
        if isinstance(seen, TimeoutError):
            return "timed out"
        if isinstance(seen, OSError) and seen.errno == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    return " ".join(str(exc).split()) or type(exc).__name__


def redis_problem(exc: BaseException, url: str) -> str | None:
    """The one-line message for a Redis failure, or None when `exc` is not one."""
    where = f"Redis at {masked(url)}"
    auth = _first(exc, rex.AuthenticationError)
    if auth is not None:
        return f"{where} refused the credentials ({auth}): check the user and password in REDIS_URL"
    old = _first(exc, UnsupportedServer)
    if old is not None:
        return f"{where}: {old}"
    gone = _first(exc, RedisUnavailable)
    if gone is not None:
        return f"cannot reach {where}: {gone}: {_REDIS_CHECK}"
    lost = _first(exc, (rex.ConnectionError, rex.TimeoutError))
    if lost is not None:
        return f"cannot reach {where} ({reason(lost)}): {_REDIS_CHECK}"
    return None


@contextlib.contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Turn Redis connection, credential and version errors raised inside into ServerError."""
    try:
        yield
    except EdgeError:
        raise
    except BaseException as exc:
        problem = redis_problem(exc, url)
        if problem is None:
            raise
        raise ServerError(problem) from exc


def postgres_problem(exc: BaseException, url: str) -> str | None:
    """The one-line message for a failure to connect to PostgreSQL, or None when `exc` is not one."""
    where = f"PostgreSQL at {masked(url)}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"{where}: {exc}: create it, or fix the database name in DATABASE_URL"
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return f"{where} refused the login ({exc}): check the user and password in DATABASE_URL"
    if isinstance(exc, OSError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return f"cannot reach {where} ({reason(exc)}): {_PG_CHECK}"
    return None


async def connect_postgres(url: str, **kwargs: Any) -> Any:
    """`asyncpg.connect`, with the failures an operator fixes translated into ServerError."""
    try:
        return await asyncpg.connect(url, **kwargs)
    except Exception as exc:
        problem = postgres_problem(exc, url)
        if problem is None:
            raise
        raise ServerError(problem) from exc


async def check_postgres(url: str) -> None:
    """Connect once, before opening a pool, so that an unusable server is one line."""
    conn = await connect_postgres(url)
    await conn.close()


def debug_enabled(flag: bool = False) -> bool:
    """`--debug`, or STREAMFILL_DEBUG set to a true value."""
    return flag or os.environ.get("STREAMFILL_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def run_command(func: Callable[[], int], *, debug: bool) -> int:
    """Run a command: EdgeError -> one line on stderr and 2; a closed stdout -> a quiet 1."""
    try:
        code = func()
        sys.stdout.flush()  # a closed pipe shows here rather than at interpreter exit
        return code
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        if _first(exc, BrokenPipeError) is not None:
            _silence_stdout()
            return 1
        edge = _first(exc, EdgeError)
        if edge is None or debug:
            raise
        print(f"streamfill: {edge}", file=sys.stderr, flush=True)
        return 2


def _silence_stdout() -> None:
    """The Python docs' recipe for EPIPE: point stdout at devnull so that the final flush at
    exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
