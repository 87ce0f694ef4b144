"""The files `apply` writes in the campaign's directory: batches/NNNN.jsonl, execution_results.json."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from workers.campaign.state import Campaign


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: a killed `apply` never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def batch_path(out: Path, number: int) -> Path:
    return out / "batches" / f"{number:04d}.jsonl"


def write_batch(out: Path, number: int, stage: int, repos: list[dict[str, Any]]) -> Path:
    """One line per repo of a batch about to be enqueued (rewritten, the same, if the enqueue
    is retried after a crash); outcomes are filled in when the stage's gate is evaluated."""
    at = round(time.time(), 3)
    lines = [
        json.dumps(
            {
                "did": r["did"],
                "host": r["host"],
                "rev": r.get("rev"),
                "stage": stage,
                "enqueued_at": at,
                "outcome": "enqueued",
                "records": 0,
                "error": "",
            }
        )
        for r in repos
    ]
    path = batch_path(out, number)
    _atomic_write(path, "\n".join(lines) + "\n")
    return path


def record_outcomes(out: Path, stage: int, per_repo: dict[str, dict[str, Any]]) -> None:
    """Fill in outcome, records written and error of a stage's repos in its batch files."""
    for path in sorted((out / "batches").glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not any(r.get("stage") == stage for r in rows):
            continue
        for row in rows:
            if row.get("stage") == stage and row["did"] in per_repo:
                row.update(per_repo[row["did"]])
        _atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_results(out: Path, campaign: Campaign) -> Path:
    """execution_results.json: where the campaign stands, every gate's figures, the artifacts."""
    path = out / "execution_results.json"
    body = campaign.to_json() | {
        "batches_dir": str(out / "batches"),
        "written_at": round(time.time(), 3),
    }
    _atomic_write(path, json.dumps(body, indent=1) + "\n")
    return path
