"""The indexer's BatchHandler: decode, collapse, apply; bisect permanent failures to the culprit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas import SchemaError, StreamContract, contract_for
from streams import DONE, BatchHandler, DeadLetter, Entry, Outcome, Retry
from workers.indexer.batch import Batch, decode
from workers.indexer.errors import PermanentError, TransientError, translated
from workers.indexer.store import ApplyStats, apply

log = logging.getLogger("streamfill.indexer")

# Dead-letter reasons an operator filters on.
REASON_INVALID = "invalid_entry"
REASON_REJECTED = "rejected_by_database"


@dataclass(frozen=True)
class IndexerStats:
    """A snapshot of what one handler has done since it started."""

    batches: int
    events: int
    ops: int
    dead_lettered: int
    retried: int
    last_error: str


class IndexerHandler:
    """Applies batches of firehose / backfill / label entries to PostgreSQL.

    Outcomes: Done for applied entries (including no-ops: replays and stale events), DeadLetter
    for entries that can never be applied, Retry for everything not committed when the database
    went away.
    """

    def __init__(
        self, pool: Any, *, acquire_timeout_s: float = 30.0, retry_delay_s: float | None = None
    ) -> None:
        # retry_delay_s None: the runtime's exponential backoff paces the retries of an outage.
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_s
        self._retry_delay_s = retry_delay_s
        self._counts = {"batches": 0, "events": 0, "ops": 0, "dead": 0, "retried": 0}
        self._last_error = ""

    async def __call__(self, entries: Sequence[Entry]) -> Sequence[Outcome]:
        """Entries of streams under no prefix: each is decoded by the contract its stream names."""
        return await self._handle(entries, None)

    def reading(self, contract: StreamContract) -> BatchHandler:
        """This handler for the entries of one stream, decoded by that stream's `contract`: what
        the wiring (`build_consumers`) gives each stream's consumer, whatever its key."""

        async def handle(entries: Sequence[Entry]) -> Sequence[Outcome]:
            return await self._handle(entries, contract)

        return handle

    async def _handle(self, entries: Sequence[Entry], contract: StreamContract | None) -> Sequence[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(entries)
        decoded = self._decode_all(entries, outcomes, contract)
        try:
            await self._apply_bisecting(decoded, outcomes)
        except TransientError as exc:
            self._last_error = str(exc)
            log.warning("database unavailable: batch will be retried", extra={"error": str(exc)})
            # Not the entries' fault: an outage must not use up their deliveries and dead-letter them.
            retry = Retry(error=str(exc), delay_s=self._retry_delay_s, counted=False)
            self._counts["retried"] += sum(1 for o in outcomes if o is None)
            outcomes = [retry if o is None else o for o in outcomes]
        return [o if o is not None else DONE for o in outcomes]

    def statistics(self) -> IndexerStats:
        """A frozen snapshot of the counters."""
        c = self._counts
        return IndexerStats(c["batches"], c["events"], c["ops"], c["dead"], c["retried"], self._last_error)

    def _decode_all(
        self, entries: Sequence[Entry], outcomes: list[Outcome | None], contract: StreamContract | None
    ) -> list[tuple[int, Any]]:
        decoded = []
        for i, entry in enumerate(entries):
            try:
                decoded.append((i, decode(contract or contract_for(entry.stream), entry.fields)))
            except SchemaError as exc:
                outcomes[i] = self._dead(REASON_INVALID, exc)
        return decoded

    async def _apply_bisecting(self, items: list[tuple[int, Any]], outcomes: list[Outcome | None]) -> None:
        """Apply `items`; on a permanent failure apply each half separately, down to one entry."""
        if not items:
            return
        try:
            await self._apply([message for _, message in items])
        except PermanentError as exc:
            if len(items) == 1:
                outcomes[items[0][0]] = self._dead(REASON_REJECTED, exc)
                return
            # Halves may be applied in any order and separately: every rule is order-independent.
            mid = len(items) // 2
            await self._apply_bisecting(items[:mid], outcomes)
            await self._apply_bisecting(items[mid:], outcomes)
            return
        for i, _ in items:
            outcomes[i] = DONE

    async def _apply(self, messages: list[Any]) -> ApplyStats:
        batch = Batch.of(messages)
        with translated():
            async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
                stats = await apply(conn, batch)
        self._counts["batches"] += 1
        self._counts["events"] += stats.events
        self._counts["ops"] += stats.ops
        return stats

    def _dead(self, reason: str, exc: Exception) -> DeadLetter:
        self._counts["dead"] += 1
        self._last_error = str(exc)
        log.warning("dead-lettering entry", extra={"reason": reason, "error": str(exc)})
        return DeadLetter(reason=reason, error=str(exc))
