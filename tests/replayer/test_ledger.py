"""The SQLite ledger: file versions, duplicate results, run completion, retries, clean-up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from schemas import CaptainsLogResult
from workers.replayer.documents import CAPTURE, LogFile
from workers.replayer.ledger import COMPLETED, INTERRUPTED, SCANNED, Ledger, LedgerBusy, Version, scan_lock


def _file(rel: str = "captures/2026-02-22/a.json", mtime_ns: int = 1, size: int = 10) -> LogFile:
    return LogFile(rel, CAPTURE, mtime_ns, size)


def _run(ledger: Ledger, run: int) -> dict[str, Any]:
    """The run's row, which the test expects there."""
    row = ledger.run(run)
    assert row is not None, run
    return row


def _result(f: LogFile, run: int, status: str = "indexed", error: str = "") -> CaptainsLogResult:
    return CaptainsLogResult(
        kind=f.kind,
        doc_id="a",
        index="agent-captains-captures-2026-02-22",
        path=f.rel,
        run=run,
        mtime_ns=f.mtime_ns,
        size=f.size,
        status=status,
        error=error,
        version=1,
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "state" / "ledger.sqlite3")


def test_a_file_is_done_only_when_its_result_arrives_and_duplicates_change_nothing(ledger: Ledger) -> None:
    f = _file()
    run = ledger.start_run()
    ledger.record_enqueued([(f, "1-0")], run)
    assert ledger.finish_scan(run, 1, 0) == []  # still in flight: not completed
    assert _run(ledger, run)["status"] == SCANNED
    folded = ledger.fold([_result(f, run)])
    assert (folded.indexed, folded.completed_runs) == (1, [run])
    again = ledger.fold([_result(f, run)])  # a redelivered result
    assert (again.indexed, again.failed, again.completed_runs) == (0, 0, [])
    row = ledger.run(run)
    assert row is not None and (row["status"], row["indexed_count"], row["enqueued_count"]) == (
        COMPLETED,
        1,
        1,
    )
    assert ledger.snapshot().completed == {f.rel: Version(1, 10)}


def test_a_result_for_an_older_version_does_not_complete_the_newer_one(ledger: Ledger) -> None:
    old, new = _file(mtime_ns=1), _file(mtime_ns=2)
    run = ledger.start_run()
    ledger.record_enqueued([(new, "2-0")], run)
    ledger.fold([_result(old, run, status="failed", error="late")])
    assert ledger.inflight_count() == 1
    assert ledger.failed_files() == []


def test_failures_count_retries_per_version(ledger: Ledger) -> None:
    f = _file()
    run = ledger.start_run()
    assert ledger.record_failed(f, "bad json", run) == 1
    assert ledger.record_failed(f, "bad json", run) == 2
    assert ledger.record_failed(_file(mtime_ns=5), "still bad", run) == 1  # the file changed
    (row,) = ledger.failed_files()
    assert (row["error"], row["retry_count"], row["mtime_ns"]) == ("still bad", 1, 5)
    # A later success clears the failure.
    g = _file(mtime_ns=5)
    ledger.record_enqueued([(g, "3-0")], run)
    ledger.fold([_result(g, run)])
    assert ledger.failed_files() == []


def test_a_refused_document_fails_its_file(ledger: Ledger) -> None:
    f = _file()
    run = ledger.start_run()
    ledger.record_enqueued([(f, "1-0")], run)
    ledger.finish_scan(run, 1, 0)
    folded = ledger.fold([_result(f, run, status="failed", error="HTTP 400: mapper_parsing_exception")])
    assert (folded.failed, folded.completed_runs) == (1, [run])
    (row,) = ledger.failed_files(run=run)
    assert row["error"].startswith("HTTP 400")
    assert _run(ledger, run)["failed_count"] == 1


def test_a_run_completes_only_after_earlier_runs_in_flight_files(ledger: Ledger) -> None:
    f, g = _file("a.json"), _file("b.json")
    first = ledger.start_run()
    ledger.record_enqueued([(f, "1-0")], first)
    ledger.mark_incomplete(first)  # not scanned yet: unchanged
    ledger.finish_scan(first, 1, 0)
    second = ledger.start_run()
    ledger.record_enqueued([(g, "2-0")], second)
    ledger.finish_scan(second, 2, 0)
    assert ledger.fold([_result(g, second)]).completed_runs == []  # f, from the first run, is in flight
    assert ledger.fold([_result(f, first)]).completed_runs == [first, second]


def test_a_run_left_running_by_a_dead_process_is_marked_interrupted_and_old_runs_are_cleaned(
    ledger: Ledger,
) -> None:
    dead = ledger.start_run()
    live = ledger.start_run()
    assert _run(ledger, dead)["status"] == INTERRUPTED
    ledger.finish_scan(live, 0, 0)
    assert ledger.cleanup(older_than_days=1) == 0
    ledger._db.execute("UPDATE runs SET started = ?", (time.time() - 8 * 86400,))
    assert ledger.cleanup(older_than_days=7) == 2
    assert ledger.runs() == []


def test_one_scanning_process_per_state_directory(tmp_path: Path) -> None:
    with scan_lock(tmp_path), pytest.raises(LedgerBusy), scan_lock(tmp_path):
        pass
    with scan_lock(tmp_path):  # released
        pass
