"""Entries parked for a local retry: still pending on this consumer, re-claimed when due."""

from __future__ import annotations

import heapq
import itertools
import time


class ParkedRetries:
    """A heap of (due time, entry id, delivery count to keep or None to count the retry)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, int | None]] = []
        self._order = itertools.count()  # ties keep the order they were parked in

    def __len__(self) -> int:
        return len(self._heap)

    def park(self, entry_id: str, delay_s: float, keep: int | None) -> None:
        heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._order), entry_id, keep))

    def seconds_to_next(self) -> float | None:
        """Until the first parked entry is due (<= 0: due now); None when nothing is parked."""
        return self._heap[0][0] - time.monotonic() if self._heap else None

    def pop_due(self, limit: int) -> list[tuple[str, int | None]]:
        """Up to `limit` due entries, earliest first: (id, delivery count to keep or None)."""
        now = time.monotonic()
        due: list[tuple[str, int | None]] = []
        while self._heap and self._heap[0][0] <= now and len(due) < limit:
            _, _, entry_id, keep = heapq.heappop(self._heap)
            due.append((entry_id, keep))
        return due
