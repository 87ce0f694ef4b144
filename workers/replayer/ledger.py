"""The replayer's ledger: which file versions are done, failed or in flight, and the runs.

A SQLite file in `REPLAYER_STATE_DIR`, WAL mode, one transaction per change. Only the scanning
process writes it (an exclusive lock file enforces one per state directory); index replicas
report through the `captains_log_results` stream, which the scanning process folds in here.

A file version is (path, mtime_ns, size). A file counts as done only once Elasticsearch accepted
its document; a file that changed on disk since is replayed again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas import CaptainsLogResult
from workers.replayer.documents import LogFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    scanned REAL,
    completed REAL,
    status TEXT NOT NULL,
    files_scanned INTEGER NOT NULL DEFAULT 0,
    enqueued_count INTEGER NOT NULL DEFAULT 0,
    indexed_count INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0,
    skipped_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS completed_files (
    path TEXT PRIMARY KEY,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    docs INTEGER NOT NULL,
    run INTEGER NOT NULL,
    doc_id TEXT NOT NULL,
    es_index TEXT NOT NULL,
    completed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failed_files (
    path TEXT PRIMARY KEY,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    error TEXT NOT NULL,
    retry_count INTEGER NOT NULL,
    last_attempt REAL NOT NULL,
    run INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inflight_files (
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    run INTEGER NOT NULL,
    entry_id TEXT,
    enqueued_at REAL NOT NULL
);
"""

# Run statuses. A run is `running` while it scans, `scanned` once everything is enqueued, and
# `completed` when no file it enqueued or awaited is still in flight. `interrupted`: its process
# died while scanning (found by the next run); `incomplete`: run-once gave up waiting (the
# documents stay in the stream and the run completes when they are indexed).
RUNNING, SCANNED, COMPLETED, INTERRUPTED, INCOMPLETE = (
    "running",
    "scanned",
    "completed",
    "interrupted",
    "incomplete",
)


class LedgerBusy(RuntimeError):
    """Another process is scanning with the same state directory."""


@dataclass(frozen=True, slots=True)
class Version:
    mtime_ns: int
    size: int


@dataclass(frozen=True, slots=True)
class InFlight:
    path: str
    version: Version
    run: int
    entry_id: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the ledger knows about every file, read once at the start of a scan."""

    completed: dict[str, Version]
    failed: dict[str, tuple[Version, int]]  # version, retry_count
    inflight: dict[str, InFlight]


@dataclass(frozen=True, slots=True)
class Folded:
    """What folding one batch of results changed."""

    indexed: int
    failed: int
    completed_runs: list[int]
    newly_done: list[CaptainsLogResult]


class Ledger:
    """The SQLite ledger. Not thread-safe: one instance per process, used from one thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; a power loss may lose the last marks,
        # which only makes those files replay again (indexing is idempotent).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- runs -------------------------------------------------------------------------------

    def start_run(self) -> int:
        """A new run; runs left `running` by a dead process become `interrupted`."""
        with self._tx() as db:
            db.execute("UPDATE runs SET status = ? WHERE status = ?", (INTERRUPTED, RUNNING))
            cur = db.execute("INSERT INTO runs (started, status) VALUES (?, ?)", (time.time(), RUNNING))
            return int(cur.lastrowid or 0)

    def finish_scan(self, run: int, files_scanned: int, skipped: int) -> list[int]:
        """The run has enqueued everything; returns the runs that are thereby completed."""
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status = ?, scanned = ?, files_scanned = ?, skipped_count = ?"
                " WHERE id = ? AND status = ?",
                (SCANNED, time.time(), files_scanned, skipped, run, RUNNING),
            )
            return _complete_runs(db)

    def mark_incomplete(self, run: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status = ? WHERE id = ? AND status = ?", (INCOMPLETE, run, SCANNED))

    def run(self, run: int) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run,)).fetchone()
        return dict(row) if row else None

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]

    def cleanup(self, older_than_days: float) -> int:
        """Delete finished runs older than the cut-off; file marks are kept (they are the state)."""
        cutoff = time.time() - older_than_days * 86400
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM runs WHERE started < ? AND status IN (?, ?)", (cutoff, COMPLETED, INTERRUPTED)
            )
            return cur.rowcount

    # -- files ------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        db = self._db
        completed = {
            r[0]: Version(r[1], r[2]) for r in db.execute("SELECT path, mtime_ns, size FROM completed_files")
        }
        failed = {
            r[0]: (Version(r[1], r[2]), r[3])
            for r in db.execute("SELECT path, mtime_ns, size, retry_count FROM failed_files")
        }
        return Snapshot(completed, failed, {i.path: i for i in self.inflight()})

    def inflight(self) -> list[InFlight]:
        rows = self._db.execute("SELECT path, mtime_ns, size, run, entry_id FROM inflight_files")
        return [InFlight(r[0], Version(r[1], r[2]), r[3], r[4]) for r in rows]

    def inflight_count(self, up_to_run: int | None = None) -> int:
        if up_to_run is None:
            return int(self._db.execute("SELECT count(*) FROM inflight_files").fetchone()[0])
        row = self._db.execute("SELECT count(*) FROM inflight_files WHERE run <= ?", (up_to_run,))
        return int(row.fetchone()[0])

    def record_failed(self, f: LogFile, error: str, run: int) -> int:
        """Mark the file version failed; returns its retry count (1 for a new version)."""
        with self._tx() as db:
            return _fail(db, f.rel, Version(f.mtime_ns, f.size), error, run)

    def record_enqueued(self, files: Sequence[tuple[LogFile, str]], run: int) -> None:
        """Files whose documents were written to the stream, with their entry ids."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO inflight_files VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(f.rel, f.kind, f.mtime_ns, f.size, run, entry_id, now) for f, entry_id in files],
            )
            db.execute("UPDATE runs SET enqueued_count = enqueued_count + ? WHERE id = ?", (len(files), run))

    def forget_inflight(self, items: Sequence[InFlight]) -> None:
        """In-flight marks whose stream entries are gone (trimmed, reset): the files replay again."""
        with self._tx() as db:
            db.executemany(
                "DELETE FROM inflight_files WHERE path = ? AND mtime_ns = ? AND size = ?",
                [(i.path, i.version.mtime_ns, i.version.size) for i in items],
            )

    def fold(self, results: Sequence[CaptainsLogResult]) -> Folded:
        """Apply results from the index role in one transaction; duplicates change nothing."""
        indexed = failed = 0
        newly_done: list[CaptainsLogResult] = []
        with self._tx() as db:
            for r in results:
                if r.status == "indexed":
                    if _complete(db, r):
                        indexed += 1
                        newly_done.append(r)
                elif _fail_from_result(db, r):
                    failed += 1
            completed_runs = _complete_runs(db)
        return Folded(indexed, failed, completed_runs, newly_done)

    def failed_files(self, run: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM failed_files"
        args: tuple[int, ...] = ()
        if run is not None:
            sql, args = sql + " WHERE run = ?", (run,)
        return [dict(r) for r in self._db.execute(sql + " ORDER BY last_attempt", args)]

    def totals(self) -> dict[str, int]:
        db = self._db
        return {
            name: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for name, table in (
                ("completed_files", "completed_files"),
                ("failed_files", "failed_files"),
                ("inflight_files", "inflight_files"),
                ("runs", "runs"),
            )
        }


@contextlib.contextmanager
def scan_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's scan lock, or raise LedgerBusy."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "scan.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LedgerBusy(f"another replayer is scanning with state directory {state_dir}") from None
        yield
    finally:
        os.close(fd)


def _same_inflight(db: sqlite3.Connection, path: str, v: Version) -> bool:
    row = db.execute(
        "SELECT 1 FROM inflight_files WHERE path = ? AND mtime_ns = ? AND size = ?",
        (path, v.mtime_ns, v.size),
    ).fetchone()
    return row is not None


def _complete(db: sqlite3.Connection, r: CaptainsLogResult) -> bool:
    v = Version(r.mtime_ns, r.size)
    was_inflight = _same_inflight(db, r.path, v)
    done = db.execute(
        "SELECT 1 FROM completed_files WHERE path = ? AND mtime_ns = ? AND size = ?",
        (r.path, v.mtime_ns, v.size),
    ).fetchone()
    if done is not None and not was_inflight:
        return False  # a redelivered result
    db.execute(
        "INSERT OR REPLACE INTO completed_files VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
        (r.path, v.mtime_ns, v.size, r.run, r.doc_id, r.index, time.time()),
    )
    db.execute(
        "DELETE FROM inflight_files WHERE path = ? AND mtime_ns = ? AND size = ?",
        (r.path, v.mtime_ns, v.size),
    )
    db.execute("DELETE FROM failed_files WHERE path = ?", (r.path,))
    db.execute("UPDATE runs SET indexed_count = indexed_count + 1 WHERE id = ?", (r.run,))
    return True


def _fail_from_result(db: sqlite3.Connection, r: CaptainsLogResult) -> bool:
    v = Version(r.mtime_ns, r.size)
    if not _same_inflight(db, r.path, v):
        return False  # a redelivered result, or the file changed and was enqueued again
    db.execute("DELETE FROM inflight_files WHERE path = ?", (r.path,))
    _fail(db, r.path, v, r.error, r.run)
    return True


def _fail(db: sqlite3.Connection, path: str, v: Version, error: str, run: int) -> int:
    row = db.execute(
        "SELECT mtime_ns, size, retry_count FROM failed_files WHERE path = ?", (path,)
    ).fetchone()
    same = row is not None and (row[0], row[1]) == (v.mtime_ns, v.size)
    retries = row[2] + 1 if same else 1
    db.execute(
        "INSERT OR REPLACE INTO failed_files VALUES (?, ?, ?, ?, ?, ?, ?)",
        (path, v.mtime_ns, v.size, error[:4000], retries, time.time(), run),
    )
    db.execute("UPDATE runs SET failed_count = failed_count + 1 WHERE id = ?", (run,))
    return int(retries)


def _complete_runs(db: sqlite3.Connection) -> list[int]:
    """Runs done scanning with nothing of theirs (or earlier) still in flight become completed."""
    oldest = db.execute("SELECT min(run) FROM inflight_files").fetchone()[0]
    rows = db.execute(
        "SELECT id FROM runs WHERE status IN (?, ?) AND (? IS NULL OR id < ?)",
        (SCANNED, INCOMPLETE, oldest, oldest),
    ).fetchall()
    ids = [int(r[0]) for r in rows]
    db.executemany(
        "UPDATE runs SET status = ?, completed = ? WHERE id = ?", [(COMPLETED, time.time(), i) for i in ids]
    )
    return ids
