"""`es_backfill_checkpoint.json`: a human-readable summary of replay progress, written atomically.

The SQLite ledger is what the replayer decides from; this file is for people and for tools that
read the documented shape:

    {"version": 1, "last_scan_started_at": "...Z", "last_scan_completed_at": "...Z" | null,
     "captures":    {"last_processed_path": "...", "last_processed_mtime": "...Z"},
     "reflections": {"last_processed_path": "...", "last_processed_mtime": "...Z"}}

`last_processed_*` is the latest file, in scan order (mtime, then path), whose document
Elasticsearch accepted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from workers.replayer.documents import CAPTURE, REFLECTION

log = logging.getLogger("streamfill.replayer")

VERSION = 1
_SECTION = {CAPTURE: "captures", REFLECTION: "reflections"}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def _iso_ns(ns: int) -> str:
    return iso(ns / 1e9)


class Checkpoint:
    """The checkpoint file of one Captain's Log root."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = self._load()
        # Scan-order keys (mtime_ns, path) of the last processed file per kind.
        self._order = {kind: o for kind in _SECTION if (o := self._loaded_order(kind)) is not None}

    def _load(self) -> dict[str, Any]:
        empty = {"last_processed_path": None, "last_processed_mtime": None}
        data: dict[str, Any] = {
            "version": VERSION,
            "last_scan_started_at": None,
            "last_scan_completed_at": None,
            "captures": dict(empty),
            "reflections": dict(empty),
        }
        try:
            loaded = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return data
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning(
                "checkpoint unreadable, starting a new one", extra={"path": str(self.path), "error": str(exc)}
            )
            return data
        if isinstance(loaded, dict):
            data.update({k: v for k, v in loaded.items() if k in data})
        return data

    def _loaded_order(self, kind: str) -> tuple[int, str] | None:
        section = self.data.get(_SECTION[kind]) or {}
        try:
            rel = Path(section["last_processed_path"]).relative_to(self.path.parent).as_posix()
            mtime = datetime.fromisoformat(section["last_processed_mtime"])
        except (KeyError, TypeError, ValueError):
            return None
        return (int(mtime.timestamp() * 1e9), rel)

    def scan_started(self, at: float) -> None:
        self.data["last_scan_started_at"] = iso(at)
        self.save()

    def scan_completed(self, at: float) -> None:
        self.data["last_scan_completed_at"] = iso(at)
        self.save()

    def processed(self, kind: str, rel: str, mtime_ns: int) -> bool:
        """Advance the kind's last processed file if this one comes later; True when it moved."""
        order = (mtime_ns, rel)
        if kind in self._order and order <= self._order[kind]:
            return False
        self._order[kind] = order
        self.data[_SECTION[kind]] = {
            "last_processed_path": (self.path.parent / rel).as_posix(),
            "last_processed_mtime": _iso_ns(mtime_ns),
        }
        return True

    def save(self) -> None:
        """Write atomically: a temporary file in the same directory, fsync, rename."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".es_backfill_checkpoint.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(self.data, option=orjson.OPT_INDENT_2))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
