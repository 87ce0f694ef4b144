"""A bounded, sequenced log of encoded event-stream frames with async wake-ups for subscribers."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from itertools import islice

__all__ = ["EventLog"]


class EventLog:
    """Frames numbered 1, 2, 3...; only the newest `maxlen` are kept for cursor replay."""

    def __init__(self, maxlen: int) -> None:
        self._frames: deque[bytes] = deque(maxlen=maxlen)
        self.last_seq = 0
        self.subscribers = 0  # open websocket connections (tests wait on this instead of sleeping)
        self.epoch = 0  # bumped by `reset`: subscribers of an older epoch are closed
        self._changed = asyncio.Event()

    @property
    def oldest_seq(self) -> int:
        """Seq of the oldest retained frame (last_seq + 1 when the log is empty)."""
        return self.last_seq - len(self._frames) + 1

    def append(self, build: Callable[[int], bytes]) -> int:
        """Assign the next seq, store the frame `build(seq)` returns, wake subscribers; return seq."""
        seq = self.last_seq + 1
        frame = build(seq)
        self._frames.append(frame)
        self.last_seq = seq
        self._wake()
        return seq

    def reset(self, last_seq: int = 0) -> None:
        """Restart the sequence (a relay that lost its state): forget every frame, number from
        `last_seq` + 1, close every open subscription."""
        self._frames.clear()
        self.last_seq = last_seq
        self.epoch += 1
        self._wake()

    def _wake(self) -> None:
        # Replace the event so that waiters woken now do not see it set on their next wait.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def after(self, cursor: int, limit: int = 500) -> list[tuple[int, bytes]]:
        """Up to `limit` retained frames with seq > cursor, oldest first."""
        start = max(cursor + 1, self.oldest_seq)
        if start > self.last_seq:
            return []
        offset = start - self.oldest_seq
        end = min(len(self._frames), offset + limit)
        first = self.oldest_seq + offset
        return [(first + i, frame) for i, frame in enumerate(islice(self._frames, offset, end))]

    async def wait_beyond(self, cursor: int) -> None:
        """Return once a frame with seq > cursor exists, or the log was reset."""
        epoch = self.epoch
        while self.last_seq <= cursor and self.epoch == epoch:
            await self._changed.wait()
