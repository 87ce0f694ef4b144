"""The runtime's small interfaces: entries, per-entry outcomes, handlers, sinks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeAlias

Fields: TypeAlias = Mapping[bytes, bytes]


def id_key(entry_id: str) -> tuple[int, int]:
    """An entry id `ms-seq` as a tuple that sorts as Redis orders ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Entry(NamedTuple):
    """One stream entry as delivered to a handler. `deliveries` is Redis' delivery count.

    A NamedTuple rather than a frozen dataclass: it is built once per entry on the hot path, and
    a frozen dataclass costs several times more to construct.
    """

    stream: str
    id: str
    fields: Fields
    deliveries: int = 1


@dataclass(frozen=True, slots=True, eq=False)
class Done:
    """Handled: ack it. Compared by identity, so `outcomes.count(DONE)` runs at C speed."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Transient failure: leave it pending; it is redelivered after `delay_s` (at least).

    `counted=False` is for failures that are not the entry's fault (the database is down): the
    retry does not consume one of the entry's `max_deliveries`, so an outage never dead-letters
    good entries. Backoff still grows with each attempt.
    """

    error: str = ""
    delay_s: float | None = None
    counted: bool = True


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Permanent failure: move it to `<stream>:dlq` with `reason`, and ack it, atomically."""

    reason: str
    error: str = ""


Outcome: TypeAlias = Done | Retry | DeadLetter

DONE = Done()


class BatchHandler(Protocol):
    """Handles a batch of entries (all from one stream) and returns one outcome per entry, in order.

    Raising instead of returning means: every entry of the batch gets `Retry` with the error.
    """

    def __call__(self, entries: Sequence[Entry], /) -> Awaitable[Sequence[Outcome]]: ...


EntryHandler: TypeAlias = Callable[[Entry], Awaitable[Outcome]]
