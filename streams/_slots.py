"""A counting semaphore whose size can change while tasks hold and wait for slots.

`anyio.Semaphore` has a fixed size and `CapacityLimiter` ties each token to the task that took
it; a consumer's reader takes a slot and a handler task gives it back, and an operator may
resize the pool while both run (a live override of the concurrency). Shrinking never takes a
slot away from its holder: new takers wait until fewer than `total` are held.
"""

from __future__ import annotations

import anyio


class Slots:
    """At most `total` slots held at once; `resize` changes `total` at any time."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"Slots total must be at least 1, got {total}")
        self.total = total
        self.held = 0
        self._changed = anyio.Event()

    async def acquire(self) -> None:
        while self.held >= self.total:
            await self._changed.wait()
        self.held += 1

    def release(self) -> None:
        self.held -= 1
        self._notify()

    def resize(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"Slots total must be at least 1, got {total}")
        self.total = total
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
