"""Where an event-stream follower stands in its source's sequence, and which seqs it may move to.

A cursor moves forward by plausible steps only (issue #13 item 4): a frame whose seq is not above
the position (stale, replayed, backwards) or is more than `max_step` above it is refused — the
follower dead-letters it with its seq and a reason — and never becomes the cursor. Two cases move
the position otherwise, and each is recorded as a gap (`Keys.gaps`): the relay announced an
`OutdatedCursor` (the frames it replays next start past what it no longer keeps), or it no longer
knows our cursor (a `FutureCursor` error, a sequence reset) and the follower resumes from its
current head.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from atp.frames import ErrorFrame, InfoFrame
from streams import Fields, dead_letter_fields

__all__ = [
    "FUTURE_CURSOR",
    "OUTDATED_CURSOR",
    "SEQ_RESET_RUN",
    "Gap",
    "SeqGuard",
    "control_of",
    "dead_frame_fields",
]

# Control signals a converter reports for the frames that steer the follower (`Converted.control`).
FUTURE_CURSOR = "future-cursor"
OUTDATED_CURSOR = "outdated-cursor"

# Consecutive stale frames on one connection that mean the source's sequence was reset (a relay
# that ignores our cursor and sends its own, lower, numbers): one or two re-sent frames are noise,
# this many in a row are a new sequence.
SEQ_RESET_RUN = 20


@dataclass(frozen=True, slots=True)
class Gap:
    """Frames the follower never read: after seq `after` (its old numbering) up to `resumed_at`."""

    after: int | None
    resumed_at: int
    reason: str

    def fields(self, host: str) -> Fields:
        return {
            "host": host,
            "after": "" if self.after is None else str(self.after),
            "resumed_at": str(self.resumed_at),
            "reason": self.reason,
            "at": f"{time.time():.3f}",
        }


class SeqGuard:
    """The last seq accepted, and the rule the next one must meet."""

    def __init__(self, max_step: int) -> None:
        self.max_step = max_step
        self.position: int | None = None
        self._gap_reason: str | None = None
        self._gap_after: int | None = None
        self.stale_run = 0

    def start(self, position: int | None) -> None:
        """A new connection from `position` (None: from the source's head, any first seq goes).

        A gap expected on the last connection is forgotten: the source says so again if it is.
        """
        self.position = position
        self.stale_run = 0
        self._gap_reason = self._gap_after = None

    def expect_gap(self, reason: str, after: int | None) -> None:
        """The next seq accepted starts past a gap (any forward step goes; it is recorded)."""
        self._gap_reason, self._gap_after = reason, after

    @property
    def gap_reason(self) -> str | None:
        """Why a gap is expected before the next accepted seq (None: no gap expected)."""
        return self._gap_reason

    def refusal(self, seq: int) -> str | None:
        """Why `seq` may not be the next position, or None when it may."""
        if self.position is None:
            return None
        if seq <= self.position:
            return "stale-seq"
        if seq - self.position > self.max_step and self._gap_reason is None:
            return "implausible-seq"
        return None

    def accept(self, seq: int) -> Gap | None:
        """Move to `seq`; the gap it closes, if one was expected."""
        gap = None
        if self._gap_reason is not None:
            gap = Gap(self._gap_after, seq, self._gap_reason)
            self._gap_reason = self._gap_after = None
        self.position = seq
        self.stale_run = 0
        return gap

    def refused(self, why: str) -> bool:
        """Count a refused seq; True when the stale run says the sequence was reset."""
        self.stale_run = self.stale_run + 1 if why == "stale-seq" else 0
        return self.stale_run >= SEQ_RESET_RUN


def dead_frame_fields(
    frame: bytes, host: str, reason: str, error: str, seq: int | None
) -> dict[bytes, bytes]:
    """DLQ fields of a frame a follower or converter refused (streams' one dead-letter layout)."""
    return dead_letter_fields(
        {"frame": frame},
        reason=reason,
        error=error,
        consumer="ingester",
        context={"host": host, "seq": "" if seq is None else str(seq)},
    )


def control_of(frame: InfoFrame | ErrorFrame) -> str | None:
    """The follower's signal in an `#info` or error frame, if it is one that steers the cursor."""
    if isinstance(frame, ErrorFrame) and frame.error == "FutureCursor":
        return FUTURE_CURSOR
    if isinstance(frame, InfoFrame) and frame.name == "OutdatedCursor":
        return OUTDATED_CURSOR
    return None
