"""The indexer's error tree, and the one place where database errors are classified.

    IndexerError
     ├── PermanentError   the input can never be applied: bad schema/JSON, data PostgreSQL
     │                    rejects (classes 22 data exception, 23 integrity violation,
     │                    54 program limit exceeded)
     │                    -> bisect the batch, dead-letter the culprit
     └── TransientError   the database is down, unreachable, restarting or busy
                          -> Retry the batch (nothing was committed by the failed transaction)

Anything else (a bug, a missing migration) is left to propagate: the runtime retries it and
dead-letters after max_deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import asyncpg


class IndexerError(Exception):
    """Base of the indexer's errors."""


class PermanentError(IndexerError):
    """Applying this input fails every time."""


class TransientError(IndexerError):
    """Applying may succeed later."""


class RetryableConflict(TransientError):
    """Deadlock or serialization failure: retried at once, a few times, by the store."""


# 22 data exception, 23 integrity violation, 54 program limit exceeded (an index row too large:
# a hostile relay's over-long DID or rkey). Bisecting finds the entry; a limit hit by the size of
# the whole batch goes away in the halves.
_PERMANENT_CLASSES = ("22", "23", "54")
# 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown),
# 58 system error (I/O).
_TRANSIENT_CLASSES = ("08", "53", "57", "58")
_CONFLICT_STATES = ("40001", "40P01")


def classify(exc: BaseException) -> type[IndexerError] | None:
    """The IndexerError subclass `exc` belongs to, or None when it is neither (a bug)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        if state in _CONFLICT_STATES:
            return RetryableConflict
        if state[:2] in _PERMANENT_CLASSES:
            return PermanentError
        if state[:2] in _TRANSIENT_CLASSES:
            return TransientError
        return None
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError):
        return TransientError
    return None


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise database and network errors as PermanentError / TransientError."""
    try:
        yield
    except IndexerError:
        raise
    except Exception as exc:
        kind = classify(exc)
        if kind is None:
            raise
        raise kind(f"{type(exc).__name__}: {exc}") from exc
