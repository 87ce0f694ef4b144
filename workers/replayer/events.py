"""The replayer's structured events (one JSON log line each) and the same counts as metrics."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import metrics

log = logging.getLogger("streamfill.replayer")

STARTED = "captains_log_backfill_started"
COMPLETED = "captains_log_backfill_completed"
FILE_FAILED = "captains_log_backfill_file_failed"
CHECKPOINT_UPDATED = "captains_log_backfill_checkpoint_updated"

_COUNTERS = {
    "files_scanned": "Captain's Log files looked at by scan passes",
    "indexed_count": "documents Elasticsearch accepted",
    "failed_count": "files recorded as failed (malformed, or refused by Elasticsearch)",
    "skipped_count": "files skipped: already indexed and unchanged, or out of retries",
    "enqueued_count": "documents written to the captains_log stream",
}
_counters: dict[str, Any] = {}


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event` as the message with `fields` beside it (`event` is also a field, for filters)."""
    log.log(level, event, extra={"event": event, **fields})


def file_failed(path: str, kind: str, error: str, *, run: int, stage: str, **context: Any) -> None:
    """A file recorded as failed: at `stage` "parse" (malformed) or "index" (refused)."""
    emit(FILE_FAILED, logging.WARNING, path=path, kind=kind, error=error, run=run, stage=stage, **context)


def count(name: str, n: int, **attributes: str) -> None:
    """Add `n` to the replayer counter `name` (one of _COUNTERS)."""
    if n > 0:
        _instruments()[name].add(n, attributes)


def run_elapsed(seconds: float) -> None:
    """Record how long a run took from its start to its completion."""
    _instruments()["elapsed"].record(seconds)


def _instruments() -> dict[str, Any]:
    if not _counters:
        meter = metrics.get_meter("streamfill.replayer")
        for key, description in _COUNTERS.items():
            _counters[key] = meter.create_counter(f"streamfill_replayer_{key}", description=description)
        _counters["elapsed"] = meter.create_histogram(
            "streamfill_replayer_run_duration", unit="s", description="a run, scan to last result"
        )
    return _counters
