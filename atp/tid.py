"""TIDs: 13-character base32-sortable timestamps used as repo revs and record keys.

A TID is a 64-bit integer: top bit 0, then 53 bits of microseconds since the Unix epoch, then a
10-bit clock identifier. Its string form sorts like the integer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from atp.errors import InvalidTid

__all__ = ["TidClock", "decode_tid", "encode_tid", "tid_from_time", "tid_timestamp_us"]

_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_CLOCK_BITS = 10
_MAX_CLOCK = (1 << _CLOCK_BITS) - 1
_MAX_US = (1 << 53) - 1


def encode_tid(value: int) -> str:
    """Encode a 63-bit integer as a 13-character TID."""
    if not 0 <= value < 1 << 63:
        raise InvalidTid(f"TID value out of range: {value}")
    chars = []
    for _ in range(13):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def decode_tid(text: str) -> int:
    """Decode a TID string to its integer; raises InvalidTid."""
    if len(text) != 13 or text[0] not in "234567abcdefghij":
        raise InvalidTid(f"invalid TID: {text!r}")
    value = 0
    for c in text:
        try:
            value = (value << 5) | _INDEX[c]
        except KeyError:
            raise InvalidTid(f"invalid TID character {c!r} in {text!r}") from None
    return value


def tid_from_time(timestamp_us: int, clock_id: int = 0) -> str:
    """Build a TID from microseconds since the epoch and a clock identifier."""
    if not 0 <= timestamp_us <= _MAX_US or not 0 <= clock_id <= _MAX_CLOCK:
        raise InvalidTid(f"TID parts out of range: {timestamp_us}, {clock_id}")
    return encode_tid((timestamp_us << _CLOCK_BITS) | clock_id)


def tid_timestamp_us(text: str) -> int:
    """Return the microsecond timestamp inside a TID."""
    return decode_tid(text) >> _CLOCK_BITS


def _wall_clock_us() -> int:
    """Microseconds since the epoch from the system clock."""
    return time.time_ns() // 1000


class TidClock:
    """A strictly increasing TID source; deterministic when given `start_us` (devnet, tests)."""

    __slots__ = ("_clock_id", "_last_us", "_now_us")

    def __init__(
        self,
        clock_id: int = 0,
        *,
        start_us: int | None = None,
        now_us: Callable[[], int] | None = None,
    ) -> None:
        if not 0 <= clock_id <= _MAX_CLOCK:
            raise InvalidTid(f"clock id out of range: {clock_id}")
        self._clock_id = clock_id
        self._last_us = -1 if start_us is None else start_us - 1
        # With a start time and no time source the clock just counts microseconds: reproducible.
        self._now_us = now_us if now_us is not None else (_wall_clock_us if start_us is None else None)

    def next(self) -> str:
        """Return a TID greater than every TID this clock returned before."""
        now = self._now_us() if self._now_us is not None else -1
        self._last_us = max(now, self._last_us + 1)
        return tid_from_time(self._last_us, self._clock_id)

    def next_int(self) -> int:
        """Return the next TID as an integer."""
        return decode_tid(self.next())
