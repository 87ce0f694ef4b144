"""The replayer's runs, from start to completion, in one place: the `RunTracker`.

A run (one scan pass) is `running` while it scans, `scanned` once everything is enqueued, and
`completed` when nothing it enqueued or awaited (nor anything of an earlier run) is in flight;
`incomplete` when run-once stopped waiting for it (it completes later, when its documents are
indexed), `interrupted` when its process died while scanning. The ledger stores those states
and finds, in the same SQLite transaction as each change, the runs that change completes; the
tracker is the only one that moves runs through them. It starts a run (for the scanner),
marks it scanned (for the scanner), takes each folded batch of results (from the folder),
announces every completion (the `completed` event, the checkpoint's last scan), and is what
waiters wait on: `caught_up` (the scanner's reconcile: the results stream folded) and
`wait_complete` (run-once: every document of its run accepted or failed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from workers.replayer import events
from workers.replayer.checkpoint import Checkpoint, iso
from workers.replayer.ledger import Folded, Ledger

log = logging.getLogger("streamfill.replayer")

# How long the scanner waits for the folder to catch up with the results stream before reconciling.
DRAIN_TIMEOUT_S = 30.0
# While run-once waits, how often it re-checks in-flight entries against the stream (finds
# entries dead-lettered without a result, e.g. after crashing their worker repeatedly).
RECONCILE_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Waited:
    """How waiting for a run ended: documents still in flight (0: complete), and whether in time."""

    outstanding: int
    timed_out: bool


class RunTracker:
    """Owns the run lifecycle of one scanning process (see the module docstring)."""

    def __init__(
        self, ledger: Ledger, checkpoint: Checkpoint, results_backlog: Callable[[], Awaitable[int]]
    ) -> None:
        self._ledger = ledger
        self._checkpoint = checkpoint
        self._results_backlog = results_backlog
        self._changed = anyio.Event()
        # Documents accepted / refused since this process started, whichever run enqueued them.
        self.indexed_total = 0
        self.failed_total = 0

    def start(self, root: Path) -> int:
        """A new run (runs a dead process left `running` become `interrupted`)."""
        started = time.time()
        run = self._ledger.start_run()
        self._checkpoint.scan_started(started)
        events.emit(events.STARTED, run=run, root=str(root))
        return run

    def scanned(self, run: int, files_scanned: int, skipped: int) -> None:
        """The run enqueued everything; with nothing of it in flight it completes at once."""
        for done in self._ledger.finish_scan(run, files_scanned, skipped):
            self._completed(done)
        self._wake()

    def folded(self, folded: Folded) -> None:
        """A batch of results was folded into the ledger: count it, announce what it completed."""
        self.indexed_total += folded.indexed
        self.failed_total += folded.failed
        for run in folded.completed_runs:
            self._completed(run)
        if folded.indexed or folded.failed or folded.completed_runs:
            self._wake()

    def give_up(self, run: int) -> None:
        """Run-once stopped waiting: the run is `incomplete` until its documents are indexed."""
        self._ledger.mark_incomplete(run)

    def outstanding(self, run: int) -> int:
        """Documents of this run (or an earlier one) still in flight."""
        return self._ledger.inflight_count(up_to_run=run)

    def row(self, run: int) -> dict[str, Any]:
        return self._ledger.run(run) or {}

    def cleanup(self, older_than_days: float) -> None:
        removed = self._ledger.cleanup(older_than_days)
        if removed:
            log.info("old runs cleaned up", extra={"runs": removed})

    def interrupt(self) -> None:
        """Let every waiter look again now (the process is stopping)."""
        self._wake()

    async def caught_up(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Wait until the results stream is folded (the folder's batches wake us; a poll backs it)."""
        with anyio.move_on_after(timeout_s) as scope:
            while await self._results_backlog() > 0:
                with anyio.move_on_after(0.05):
                    await self._changed.wait()
        if scope.cancelled_caught:
            log.warning("results not folded in time; reconciling with what is folded")

    async def wait_complete(
        self,
        run: int,
        *,
        timeout_s: float | None,
        reconcile: Callable[[], Awaitable[None]],
        stopped: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> Waited:
        """Wait until nothing of `run` is in flight, reconciling every RECONCILE_EVERY_S.

        Ends early when `stopped()` (looked at on every change and on `interrupt`), or after
        `timeout_s`; a run left waiting for is marked `incomplete`.
        """
        deadline = None if timeout_s is None else clock() + timeout_s
        last_reconcile = clock()
        while (left := self.outstanding(run)) and not stopped():
            if deadline is not None and clock() >= deadline:
                self.give_up(run)
                return Waited(left, timed_out=True)
            if clock() - last_reconcile >= RECONCILE_EVERY_S:
                await reconcile()
                last_reconcile = clock()
            wait = RECONCILE_EVERY_S if deadline is None else min(RECONCILE_EVERY_S, deadline - clock())
            with anyio.move_on_after(max(0.0, wait)):
                await self._changed.wait()
        left = self.outstanding(run)
        if left:
            self.give_up(run)
        return Waited(left, timed_out=False)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _completed(self, run: int) -> None:
        row = self.row(run)
        completed = row.get("completed") or time.time()
        self._checkpoint.scan_completed(completed)
        elapsed_ms = round((completed - row.get("started", completed)) * 1000)
        events.run_elapsed(elapsed_ms / 1000)
        events.emit(
            events.COMPLETED,
            run=run,
            files_scanned=row.get("files_scanned", 0),
            enqueued_count=row.get("enqueued_count", 0),
            indexed_count=row.get("indexed_count", 0),
            failed_count=row.get("failed_count", 0),
            skipped_count=row.get("skipped_count", 0),
            elapsed_ms=elapsed_ms,
            completed_at=iso(completed),
        )
