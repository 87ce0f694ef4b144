"""Priority between the consumers of one process: live batches first, bulk batches in the gaps.

A worker that reads a live stream and a bulk stream (the indexer: `firehose_live`/`label_live`
and `firehose_backfill`) shares one process, one event loop and one database between them, so a
live entry that arrives while bulk batches are being applied waits for them. `Priority` wraps the
handlers: `high(handler)` for the live consumers, `low(handler)` for the bulk ones.

- A bulk chunk does not start while a live batch is being handled, unless it has waited
  `max_wait_s` already (live traffic that is always in flight must not starve the bulk stream:
  it then gets one chunk per `max_wait_s` at least).
- While live work was seen within `quiet_s`, at most `low_share` bulk calls run at a time, and a
  bulk batch is applied in chunks of `low_chunk` entries, each admitted anew: a live batch waits
  for at most one chunk, not for whole bulk batches.
- Once live has been quiet for `quiet_s`, bulk batches run whole, at the consumers' concurrency.

A bulk batch waiting here has been read: it stays pending and its consumer renews its lease
around the handler call, so waiting never gets it reclaimed (as `PartitionedConsumer`'s limiter).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from streams._types import BatchHandler, Entry, Outcome


@dataclass(frozen=True, slots=True)
class PriorityConfig:
    # Bulk calls at a time while live is active: one keeps the bulk stream moving.
    low_share: int = 1
    # Entries per bulk chunk while live is active: a live batch that arrives mid-chunk waits for
    # it (tens of milliseconds); smaller chunks cost bulk throughput (one transaction each).
    low_chunk: int = 100
    # Live counts as active this long after its last batch (a steady stream has gaps between events).
    quiet_s: float = 1.0
    # The longest a bulk chunk waits for live batches to finish (starvation bound).
    max_wait_s: float = 0.05


@dataclass(frozen=True, slots=True)
class PriorityStats:
    high_batches: int
    low_batches: int
    low_waits: int  # bulk chunks that had to wait for live work


class Priority:
    """Shared by the handlers of one worker; see the module."""

    def __init__(self, config: PriorityConfig | None = None) -> None:
        self.config = config or PriorityConfig()
        self._high = 0
        self._low = 0
        self._last_high = -float("inf")
        self._changed = anyio.Event()
        self._counts = {"high": 0, "low": 0, "waits": 0}

    def high(self, handler: BatchHandler) -> BatchHandler:
        async def call(entries: Sequence[Entry]) -> Sequence[Outcome]:
            self._high += 1
            self._counts["high"] += 1
            self._last_high = time.monotonic()
            try:
                return await handler(entries)
            finally:
                self._high -= 1
                self._last_high = time.monotonic()
                self._notify()

        return call

    def low(self, handler: BatchHandler) -> BatchHandler:
        async def call(entries: Sequence[Entry]) -> Sequence[Outcome]:
            self._counts["low"] += 1
            outcomes: list[Outcome] = []
            start = 0
            while start < len(entries):
                await self._admit_low()
                size = self.config.low_chunk if self._live_active() else len(entries) - start
                self._low += 1
                try:
                    outcomes += await handler(entries[start : start + size])
                finally:
                    self._low -= 1
                    self._notify()
                start += size
            return outcomes

        return call

    def statistics(self) -> PriorityStats:
        return PriorityStats(self._counts["high"], self._counts["low"], self._counts["waits"])

    def _live_active(self) -> bool:
        return self._high > 0 or time.monotonic() - self._last_high < self.config.quiet_s

    def _may_run_low(self, waited_s: float) -> bool:
        if not self._live_active():
            return True
        if self._low >= self.config.low_share:
            return False
        return self._high == 0 or waited_s >= self.config.max_wait_s

    async def _admit_low(self) -> None:
        started = time.monotonic()
        if self._may_run_low(0.0):
            return
        self._counts["waits"] += 1
        while not self._may_run_low(time.monotonic() - started):
            changed = self._changed
            with anyio.move_on_after(self._wake_in(started)):
                await changed.wait()

    def _wake_in(self, started: float) -> float:
        """How long a waiting bulk chunk may sleep: handlers finishing notify it, but live turning
        quiet (no live batch in hand) and the wait bound passing do not."""
        now = time.monotonic()
        deadlines = []
        if self._high == 0:
            deadlines.append(self._last_high + self.config.quiet_s - now)
        if now - started < self.config.max_wait_s:
            deadlines.append(started + self.config.max_wait_s - now)
        return max(0.001, min(deadlines)) if deadlines else float("inf")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
