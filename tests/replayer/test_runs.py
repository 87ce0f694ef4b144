"""The run tracker: a run's lifecycle in one place (started, scanned, completed, waited for)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from schemas import CaptainsLogResult
from workers.replayer.checkpoint import Checkpoint
from workers.replayer.documents import CAPTURE, LogFile
from workers.replayer.ledger import COMPLETED, INCOMPLETE, Ledger
from workers.replayer.runs import RunTracker, Waited

pytestmark = pytest.mark.anyio

F = LogFile("captures/2026-02-22/a.json", CAPTURE, 1, 10)


def _indexed(run: int) -> CaptainsLogResult:
    return CaptainsLogResult(
        kind=F.kind,
        doc_id="a",
        index="agent-captains-captures-2026-02-22",
        path=F.rel,
        run=run,
        mtime_ns=F.mtime_ns,
        size=F.size,
        status="indexed",
        error="",
        version=1,
    )


async def _nothing() -> None:
    return None


async def _no_backlog() -> int:
    return 0


def tracker(tmp_path: Path) -> tuple[RunTracker, Ledger, Checkpoint]:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    checkpoint = Checkpoint(tmp_path / "checkpoint.json")
    return RunTracker(ledger, checkpoint, _no_backlog), ledger, checkpoint


async def test_a_run_with_nothing_in_flight_completes_when_scanned(tmp_path: Path) -> None:
    runs, ledger, checkpoint = tracker(tmp_path)
    run = runs.start(tmp_path)
    assert checkpoint.data["last_scan_started_at"] is not None
    runs.scanned(run, files_scanned=3, skipped=3)
    assert runs.row(run)["status"] == COMPLETED
    assert checkpoint.data["last_scan_completed_at"] is not None
    waited = await runs.wait_complete(run, timeout_s=1, reconcile=_nothing, stopped=lambda: False)
    assert waited == Waited(0, timed_out=False)
    ledger.close()


async def test_a_waiter_wakes_when_the_last_result_is_folded(tmp_path: Path) -> None:
    runs, ledger, _ = tracker(tmp_path)
    run = runs.start(tmp_path)
    ledger.record_enqueued([(F, "1-0")], run)
    runs.scanned(run, files_scanned=1, skipped=0)
    waited: list[Waited] = []

    async def wait() -> None:
        waited.append(
            await runs.wait_complete(run, timeout_s=None, reconcile=_nothing, stopped=lambda: False)
        )

    with anyio.fail_after(5):  # far below RECONCILE_EVERY_S: the fold itself must wake the waiter
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            runs.folded(ledger.fold([_indexed(run)]))
    assert waited == [Waited(0, timed_out=False)]
    assert runs.row(run)["status"] == COMPLETED and runs.indexed_total == 1
    ledger.close()


async def test_a_run_left_waiting_is_incomplete(tmp_path: Path) -> None:
    runs, ledger, _ = tracker(tmp_path)
    run = runs.start(tmp_path)
    ledger.record_enqueued([(F, "1-0")], run)
    runs.scanned(run, files_scanned=1, skipped=0)
    timed_out = await runs.wait_complete(run, timeout_s=0, reconcile=_nothing, stopped=lambda: False)
    assert timed_out == Waited(1, timed_out=True)
    assert runs.row(run)["status"] == INCOMPLETE
    stopped = await runs.wait_complete(run, timeout_s=None, reconcile=_nothing, stopped=lambda: True)
    assert stopped == Waited(1, timed_out=False)
    runs.folded(ledger.fold([_indexed(run)]))  # its documents arrive later: it completes then
    assert runs.row(run)["status"] == COMPLETED
    ledger.close()
