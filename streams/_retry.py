"""Retry policies: exponential backoff with full jitter, error classification, skip-ahead."""

from __future__ import annotations

import random
from dataclasses import dataclass

from streams._types import DeadLetter, Outcome, Retry


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog): uniform(0, min(cap, base*2^n))."""

    base_s: float = 0.5
    cap_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (1 = first retry)."""
        ceiling = min(self.cap_s, self.base_s * (2 ** max(0, attempt - 1)))
        return float((rng or random).uniform(0, ceiling))


def is_permanent(exc: BaseException) -> bool:
    """An error is permanent when it says so (`permanent = True`) or is bad input by type."""
    flag = getattr(exc, "permanent", None)
    if isinstance(flag, bool):
        return flag
    return isinstance(exc, ValueError | TypeError | KeyError | UnicodeError)


def classify(exc: BaseException, *, reason: str | None = None) -> Outcome:
    """Turn a handler exception into an outcome: permanent -> DeadLetter, else Retry."""
    text = f"{type(exc).__name__}: {exc}"
    if is_permanent(exc):
        return DeadLetter(reason=reason or type(exc).__name__, error=text)
    return Retry(error=text, delay_s=getattr(exc, "retry_after_s", None))


@dataclass(frozen=True, slots=True)
class SkipDecision:
    """What a cursor source does after a failure at `position`."""

    retry_same: bool
    skip_from: str = ""
    skip_to: str = ""
    failures: int = 0


class SkipAhead:
    """After `max_failures` consecutive failures at one position, advance it by `step`.

    Positions are numeric strings (relay listRepos cursors are account ids). The caller writes the
    new cursor and the ledger entry in one MULTI (see `Producer.skip`).
    """

    def __init__(self, max_failures: int, step: int) -> None:
        if max_failures < 1 or step < 1:
            raise ValueError("max_failures and step must be >= 1")
        self.max_failures = max_failures
        self.step = step
        self._position: str | None = None
        self._failures = 0

    def failed(self, position: str) -> SkipDecision:
        if position != self._position:
            self._position, self._failures = position, 0
        self._failures += 1
        if self._failures < self.max_failures:
            return SkipDecision(retry_same=True, failures=self._failures)
        failures, self._position, self._failures = self._failures, None, 0
        return SkipDecision(
            retry_same=False, skip_from=position, skip_to=advance(position, self.step), failures=failures
        )

    def succeeded(self) -> None:
        self._position, self._failures = None, 0

    @property
    def consecutive_failures(self) -> int:
        return self._failures


def advance(position: str, step: int) -> str:
    """`position + step` for numeric cursors; an empty cursor is position 0."""
    try:
        value = int(position or "0")
    except ValueError:
        raise ValueError(f"cannot skip ahead from non-numeric cursor {position!r}") from None
    return str(value + step)
