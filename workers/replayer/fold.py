"""Folding `captains_log_results` into the ledger (in the scanning process).

A BatchHandler on the results stream: each batch is one SQLite transaction. It advances the
checkpoint file and emits `file_failed` / `checkpoint_updated` events; what the batch did to runs
(completions, waking whoever waits) is the run tracker's (`workers.replayer.runs`).
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas import CaptainsLogResult, SchemaError, decode_entry
from streams import DONE, DeadLetter, Entry, Outcome
from workers.replayer import events
from workers.replayer.checkpoint import Checkpoint
from workers.replayer.ledger import Folded, Ledger
from workers.replayer.runs import RunTracker


class LedgerFolder:
    """Applies results to the ledger, then hands what they did to runs to the tracker."""

    def __init__(self, ledger: Ledger, checkpoint: Checkpoint, runs: RunTracker) -> None:
        self._ledger = ledger
        self._checkpoint = checkpoint
        self._runs = runs

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
        events.count("indexed_count", folded.indexed)
        events.count("failed_count", folded.failed)
        for r in results:
            if r.status == "failed":
                events.file_failed(r.path, r.kind, r.error, run=r.run, stage="index", doc_id=r.doc_id)
        self._advance_checkpoint(folded)
        self._runs.folded(folded)
        return folded

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
