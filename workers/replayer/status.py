"""`streamfill replayer status`: what the ledger says (read-only; safe while a replayer runs)."""

from __future__ import annotations

import json
import sys
from typing import Any

from workers.replayer.checkpoint import iso
from workers.replayer.config import ReplayerConfig
from workers.replayer.ledger import Ledger


def show_status(
    config: ReplayerConfig, *, summary: bool, failed: bool, run_id: int | None, as_json: bool
) -> int:
    if not config.ledger_path.exists():
        print(
            f"streamfill replayer: no ledger at {config.ledger_path} (no scan has run yet)", file=sys.stderr
        )
        return 1
    ledger = Ledger(config.ledger_path)
    try:
        report = _report(ledger, summary=summary, failed=failed, run_id=run_id)
    finally:
        ledger.close()
    if report is None:
        print(f"streamfill replayer: no run {run_id}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(report, default=str))
    else:
        _print(report)
    return 0


def _report(ledger: Ledger, *, summary: bool, failed: bool, run_id: int | None) -> dict[str, Any] | None:
    report: dict[str, Any] = {"totals": ledger.totals()}
    if run_id is not None:
        run = ledger.run(run_id)
        if run is None:
            return None
        report["run"] = run
        report["failed"] = ledger.failed_files(run=run_id)
        return report
    runs = ledger.runs(limit=1000 if summary else 1)
    report["current"] = runs[0] if runs else None
    if summary:
        report["runs"] = runs
    if failed:
        report["failed"] = ledger.failed_files()
    return report


def _print(report: dict[str, Any]) -> None:
    t = report["totals"]
    print(
        f"ledger: {t['completed_files']} files indexed, {t['failed_files']} failed, "
        f"{t['inflight_files']} in flight, {t['runs']} runs kept"
    )
    run = report.get("run") or report.get("current")
    if run:
        print("run: " + _run_line(run))
    for r in report.get("runs", []):
        print("  " + _run_line(r))
    failed = report.get("failed")
    if failed is not None:
        print(f"failed files: {len(failed)}")
        for f in failed:
            last = iso(f["last_attempt"])
            print(f"  {f['path']}\tretries={f['retry_count']}\tlast={last}\trun={f['run']}\t{f['error']}")


def _run_line(r: dict[str, Any]) -> str:
    completed = iso(r["completed"]) if r.get("completed") else "-"
    return (
        f"{r['id']}\t{r['status']}\tstarted={iso(r['started'])}\tcompleted={completed}\t"
        f"scanned={r['files_scanned']} enqueued={r['enqueued_count']} indexed={r['indexed_count']} "
        f"failed={r['failed_count']} skipped={r['skipped_count']}"
    )
