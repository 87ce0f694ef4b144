"""The scan role: one pass over the Captain's Log files into the `captains_log` stream.

A pass (a "run" in the ledger):
1. reconciles what the ledger thinks is in flight with the stream (entries trimmed away are
   replayed again; entries acked without a result were dead-lettered and are recorded failed);
2. lists the files in a stable order (mtime, then path) and, per file, skips it (indexed and
   unchanged; out of retries; an earlier version still in flight, awaited instead), records it
   failed (malformed, with the error), or reads it and writes its document to the stream, with
   the producer's backpressure;
3. marks the run scanned. It completes when nothing it enqueued or awaited is in flight: the
   run tracker (`workers.replayer.runs`) starts, marks and completes runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import redis.asyncio as aioredis

from schemas import CaptainsLogDoc, encode_entry
from streams import EntryState, Producer, entry_states
from streams.admin import count_replayed
from workers.replayer import events
from workers.replayer.documents import LogFile, MalformedFile, find_files, read_document
from workers.replayer.ledger import InFlight, Ledger, Snapshot, Version
from workers.replayer.runs import RunTracker

log = logging.getLogger("streamfill.replayer")

# Documents per producer batch (one round trip, one ledger transaction).
SCAN_BATCH = 200


@dataclass(frozen=True)
class PassReport:
    """What one scan pass did."""

    run: int
    files_scanned: int
    enqueued: int
    awaited: int
    failed: int
    skipped: int
    elapsed_ms: int


@dataclass
class _Tally:
    enqueued: int = 0
    awaited: int = 0
    failed: int = 0
    skipped: int = 0


class Scanner:
    """Runs scan passes for one Captain's Log root."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        root: Path,
        group: str,
        ledger: Ledger,
        producer: Producer,
        max_retries: int,
        runs: RunTracker,
    ) -> None:
        self._redis = redis
        self._root = root
        self._group = group
        self._ledger = ledger
        self._producer = producer
        self._max_retries = max_retries
        self._runs = runs
        self._stopping = False

    def stop(self) -> None:
        """Stop after the current batch (the run is left for the next pass to mark interrupted)."""
        self._stopping = True

    async def scan_pass(self) -> PassReport:
        started = time.time()
        run = self._runs.start(self._root)
        await self.reconcile()
        files = await anyio.to_thread.run_sync(find_files, self._root)
        tally = await self._scan_files(files, run)
        elapsed_ms = round((time.time() - started) * 1000)
        report = PassReport(
            run, len(files), tally.enqueued, tally.awaited, tally.failed, tally.skipped, elapsed_ms
        )
        events.count("files_scanned", len(files))
        events.count("skipped_count", tally.skipped)
        if self._stopping:
            return report
        log.info("scan pass enqueued its files", extra=vars(report))
        self._runs.scanned(run, len(files), tally.skipped)
        return report

    async def reconcile(self) -> None:
        """Forget in-flight marks whose entries are gone; record as failed those acked silently."""
        inflight = self._ledger.inflight()
        if not inflight:
            return
        states = await entry_states(
            self._redis, self._producer.config.stream, self._group, [i.entry_id for i in inflight]
        )
        # Results are written before their entry is acked: once they are folded, an entry seen
        # acked above whose file is still in flight was dead-lettered without a result.
        await self._runs.caught_up()
        still = {i.path: i for i in self._ledger.inflight()}
        lost: list[InFlight] = []
        for item, state in zip(inflight, states, strict=True):
            current = still.get(item.path)
            if current is None or current.version != item.version:
                continue
            if state is EntryState.MISSING:
                lost.append(item)
            elif state is EntryState.ACKED:
                self._ledger.forget_inflight([item])
                self._ledger.record_failed(
                    _as_file(item), "dead-lettered without a result: see the DLQ", item.run
                )
        if lost:
            log.warning(
                "in-flight documents no longer in the stream: replaying them", extra={"files": len(lost)}
            )
            self._ledger.forget_inflight(lost)

    async def _scan_files(self, files: Sequence[LogFile], run: int) -> _Tally:
        snapshot = self._ledger.snapshot()
        tally = _Tally()
        todo: list[LogFile] = []
        for f in files:
            if self._stopping:
                break
            if self._decide(snapshot, f, tally):
                todo.append(f)
            if len(todo) >= SCAN_BATCH:
                await self._enqueue(todo, run, tally)
                todo = []
        if todo and not self._stopping:
            await self._enqueue(todo, run, tally)
        return tally

    def _decide(self, snapshot: Snapshot, f: LogFile, tally: _Tally) -> bool:
        """True when the file must be read and enqueued; else counts why not."""
        version = Version(f.mtime_ns, f.size)
        if snapshot.completed.get(f.rel) == version:
            tally.skipped += 1
            return False
        if f.rel in snapshot.inflight:
            # The same version is being indexed, or an older one is: one version in flight per
            # path, so an older document can never overwrite a newer one in Elasticsearch.
            tally.awaited += 1
            return False
        failed = snapshot.failed.get(f.rel)
        if failed is not None and failed[0] == version and failed[1] > self._max_retries:
            tally.skipped += 1
            return False
        return True

    async def _enqueue(self, files: list[LogFile], run: int, tally: _Tally) -> None:
        read = await anyio.to_thread.run_sync(_read_all, self._root, files, run)
        docs: list[tuple[LogFile, CaptainsLogDoc]] = []
        for f, doc_or_error in read:
            if isinstance(doc_or_error, MalformedFile):
                self._malformed(f, doc_or_error, run)
                tally.failed += 1
            else:
                docs.append((f, doc_or_error))
        if not docs:
            return
        stream = self._producer.config.stream
        entries = [encode_entry(stream, doc) for _, doc in docs]
        ids = await self._producer.send(entries)
        for fields in entries:
            count_replayed(stream, fields)
        self._ledger.record_enqueued([(f, entry_id) for (f, _), entry_id in zip(docs, ids, strict=True)], run)
        tally.enqueued += len(docs)
        events.count("enqueued_count", len(docs))

    def _malformed(self, f: LogFile, exc: MalformedFile, run: int) -> None:
        retries = self._ledger.record_failed(f, str(exc), run)
        events.count("failed_count", 1)
        events.file_failed(
            f.rel,
            f.kind,
            str(exc),
            run=run,
            stage="parse",
            mtime_ns=f.mtime_ns,
            size=f.size,
            retry_count=retries,
        )


def _read_all(
    root: Path, files: list[LogFile], run: int
) -> list[tuple[LogFile, CaptainsLogDoc | MalformedFile]]:
    out: list[tuple[LogFile, CaptainsLogDoc | MalformedFile]] = []
    for f in files:
        try:
            out.append((f, read_document(root, f, run)))
        except MalformedFile as exc:
            out.append((f, exc))
    return out


def _as_file(item: InFlight) -> LogFile:
    return LogFile(item.path, "", item.version.mtime_ns, item.version.size)
