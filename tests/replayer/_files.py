"""Writing Captain's Log files the way the agent service does (for the replayer's tests)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_capture(
    root: Path, trace_id: str, timestamp: str, *, mtime: float | None = None, **extra: Any
) -> Path:
    day = timestamp[:10]
    path = root / "captures" / day / f"{trace_id}.json"
    return _write(path, {"trace_id": trace_id, "timestamp": timestamp, **extra}, mtime)


def write_reflection(
    root: Path, entry_id: str, timestamp: str, *, mtime: float | None = None, **extra: Any
) -> Path:
    path = root / f"CL-{entry_id}.json"
    return _write(path, {"entry_id": entry_id, "timestamp": timestamp, **extra}, mtime)


def write_raw(path: Path, text: str, *, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _write(path: Path, doc: dict[str, Any], mtime: float | None) -> Path:
    # Pretty-printed, as the agent writes them: the replayer must send one line per document.
    return write_raw(path, json.dumps(doc, indent=2), mtime=mtime)


def sample_log(
    root: Path, *, captures: int, reflections: int, base: float = 1_760_000_000.0
) -> list[tuple[str, str]]:
    """Captures and reflections spread over three days; returns (index, doc id) of each."""
    expected = []
    for i in range(captures):
        day = 21 + i % 3
        ts = f"2026-02-{day:02d}T{i % 24:02d}:00:00Z"
        write_capture(
            root,
            f"trace-{i:05d}",
            ts,
            mtime=base + i,
            user_message=f"hello {i}",
            outcome="completed",
            steps=[{"tool": "search", "ms": i}],
        )
        expected.append((f"agent-captains-captures-2026-02-{day:02d}", f"trace-{i:05d}"))
    for i in range(reflections):
        day = 21 + i % 3
        ts = f"2026-02-{day:02d}T12:{i % 60:02d}:00+00:00"
        write_reflection(
            root,
            f"entry-{i:05d}",
            ts,
            mtime=base + captures + i,
            type="reflection",
            rationale=f"because {i}",
            metrics={"score": i / 10},
        )
        expected.append((f"agent-captains-reflections-2026-02-{day:02d}", f"entry-{i:05d}"))
    return expected
