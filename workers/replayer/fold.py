"""Folding `captains_log_results` into the ledger (in the scanning process).

A BatchHandler on the results stream: each batch is one SQLite transaction. It advances the
checkpoint file, emits `file_failed` / `checkpoint_updated` / `completed` events, and wakes
whoever waits for a pass to finish (`run-once`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio

from schemas import CaptainsLogResult, SchemaError, decode_entry
from streams import DONE, DeadLetter, Entry, Outcome
from workers.replayer import events
from workers.replayer.checkpoint import Checkpoint, iso
from workers.replayer.ledger import Folded, Ledger


class LedgerFolder:
    """Applies results to the ledger; `changed` is set after every batch that changed something."""

    def __init__(self, ledger: Ledger, checkpoint: Checkpoint) -> None:
        self._ledger = ledger
        self._checkpoint = checkpoint
        self.changed = anyio.Event()
        # Documents accepted / refused since this process started, whichever run enqueued them.
        self.indexed_total = 0
        self.failed_total = 0

    async def __call__(self, entries: Sequence[Entry]) -> Sequence[Outcome]:
        outcomes: list[Outcome] = []
        results: list[CaptainsLogResult] = []
        for entry in entries:
            try:
                results.append(decode_entry(entry.stream, entry.fields))
                outcomes.append(DONE)
            except SchemaError as exc:
                outcomes.append(DeadLetter(reason="invalid_entry", error=str(exc)))
        if results:
            self.apply(results)
        return outcomes

    def apply(self, results: Sequence[CaptainsLogResult]) -> Folded:
        folded = self._ledger.fold(results)
        self.indexed_total += folded.indexed
        self.failed_total += folded.failed
        events.count("indexed_count", folded.indexed)
        events.count("failed_count", folded.failed)
        for r in results:
            if r.status == "failed":
                events.file_failed(r.path, r.kind, r.error, run=r.run, stage="index", doc_id=r.doc_id)
        self._advance_checkpoint(folded)
        for run in folded.completed_runs:
            self.run_completed(run)
        if folded.indexed or folded.failed or folded.completed_runs:
            self.changed.set()
            self.changed = anyio.Event()
        return folded

    def run_completed(self, run: int) -> None:
        row = self._ledger.run(run) or {}
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

    def _advance_checkpoint(self, folded: Folded) -> None:
        moved = [r for r in folded.newly_done if self._checkpoint.processed(r.kind, r.path, r.mtime_ns)]
        if not moved:
            return
        self._checkpoint.save()
        events.emit(
            events.CHECKPOINT_UPDATED,
            captures=self._checkpoint.data["captures"],
            reflections=self._checkpoint.data["reflections"],
            indexed_count=folded.indexed,
        )
