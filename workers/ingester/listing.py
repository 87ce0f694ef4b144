"""Backfill mode: page `listRepos` on one host (a relay or a PDS) into `repo_backfill`.

Each page's jobs and the cursor after it are written in one script call, so a crash never loses
a page and never records a cursor ahead of its data (rsky saved the cursor first). Every job is
guarded by its slot in the listed register (`workers.ingester.register`), checked and written in
that same call: a repo is enqueued once per (did, rev, active), whichever path lists it. When
paging ends the cursor becomes `!ingester-done`; a re-check is a whole new pass from the start,
which enqueues only what is new or changed. After `max_consecutive_errors` failures at one
numeric cursor the source skips ahead and ledgers the skipped range (`--retry-skipped`). A cursor
that does not advance (the same one again, or one seen earlier in the pass: a cycle) ends the
pass: the range from it is ledgered (end `!ingester-done`), and the host is paged again only at
the next re-check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus

from atp import AtpError, ForbiddenHost, InvalidDid, RateLimited, UpstreamError
from atp.did import validate_did
from atp.xrpc import XrpcClient
from schemas import RepoJob, contract_for
from streams import (
    CURSOR_DONE,
    ERROR_CAP,
    Backoff,
    Keys,
    Mark,
    Outlet,
    PartitionedProducer,
    Producer,
    RunnerConfig,
    SourceBatch,
    SourceError,
    SourceRunner,
    StreamNames,
    dead_letter_fields,
    resolve_skipped,
    skipped_ranges,
)
from workers.ingester.config import IngesterConfig
from workers.ingester.register import listed_mark

log = logging.getLogger("streamfill.ingester.listing")
STREAM = StreamNames.REPO_BACKFILL
_JOBS = contract_for(STREAM)


def _jobs(
    host: str, repos: Sequence[Any], keys: Keys, partitions: int = 1, source: str | None = None
) -> tuple[list[dict[bytes, bytes]], list[Mark | None], list[tuple[str, Any]]]:
    """Valid repos become jobs with their register marks (tagged with `source`, a PDS's host);
    malformed ones go to the DLQ with a reason."""
    jobs: list[dict[bytes, bytes]] = []
    marks: list[Mark | None] = []
    bad: list[tuple[str, Any]] = []
    for repo in repos:
        try:
            if not isinstance(repo, dict):
                raise ValueError(f"listRepos item is not an object: {repo!r:.100}")
            did = validate_did(str(repo.get("did", "")))
            status = repo.get("status")
            job = RepoJob(
                did=did,
                host=host,
                rev=repo.get("rev"),
                status=str(status) if status else None,
                active=bool(repo.get("active", True)),
                reason="list",
            )
            rev = None if job.rev is None else str(job.rev)
            jobs.append(_JOBS.encode(job))
            marks.append(
                listed_mark(keys, STREAM, did, rev, job.active, partitions=partitions, source=source)
            )
        except (InvalidDid, ValueError, TypeError) as exc:
            bad.append((f"{type(exc).__name__}: {exc}", repo))
    return jobs, marks, bad


class ListingSource:
    """Pages one host's listRepos into repo_backfill; a `streams.Source`, run by its own runner.

    A relay's source waits for an unreachable relay however long it takes. A PDS's source (from
    host discovery) has `give_up_after`: after that many failures it cannot skip past (no answer,
    or a non-numeric cursor) it ends the pass, keeping its cursor for the next round, so that one
    dead host never holds a paging slot. A PDS's source is also `tagged`: its register marks name
    its host, so that its stale "deactivated" for an account that moved away (at the rev the
    account left with) does not undo the active listing of the account's new host
    (`workers.ingester.register`). Backoff, skip-ahead and its ledger, the cursor and
    stopping belong to the runner (`streams.SourceRunner`).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        config: IngesterConfig,
        host: str,
        producer: Producer,
        xrpc: XrpcClient,
        *,
        url: str | None = None,
        give_up_after: int | None = None,
        tagged: bool = False,
    ) -> None:
        self._keys = keys
        self._source = host if tagged else None  # the tag of its register marks
        self._config = config
        self.host = host  # names the cursor keys
        self.name = f"listing:{host}"
        self.url = url or host  # where to send requests (may carry a scheme)
        # The register's buckets live in the slot of the partition their jobs go to.
        self._partitions = len(producer.partitions) if isinstance(producer, PartitionedProducer) else 1
        self._xrpc = xrpc
        self._stream = producer.config.stream
        self._ledger = keys.ledger(STREAM, host)
        self._redis = redis
        self.runner = SourceRunner(
            redis,
            self,
            producer,
            RunnerConfig(
                cursor_key=keys.cursor(STREAM, host),
                ledger_key=self._ledger,
                backoff=Backoff(base_s=0.5, cap_s=30.0),
                skip=(config.max_consecutive_errors, config.skip_ahead),
                give_up_after=give_up_after,
            ),
        )
        self._recheck = False  # a finished host is paged again from the start
        self.pages = 0
        self.listed = 0  # jobs written (new or changed repos)
        self.seen = 0  # valid repos read, written or not
        self.passes = 0
        self.cycles = 0  # passes ended by a cursor that did not advance

    @property
    def abandoned(self) -> int:
        """Passes given up (by the runner, or by discovery after two skips in a row)."""
        return self.runner.abandoned

    def retune(self, config: IngesterConfig) -> None:
        """Apply the live-tunable settings (the re-check interval) from the next wait on."""
        self._config = config

    def stop(self) -> None:
        self.runner.stop()

    def interrupt(self) -> None:
        """Nothing to cancel: a page in flight is written, then the pass ends."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Page to the end; then, every `recheck_interval_s`, page the whole host again."""
        await self.runner.run(task_status=task_status)

    async def run_pass(self, *, recheck: bool) -> bool:
        """Finish the current pass; with `recheck`, a finished host starts a new one from the start.

        Returns whether there is more to do at once (stopped, skipped ahead or given up: False).
        """
        self._recheck = recheck
        return await self.runner.run_pass()

    async def session(self, cursor: str | None, out: Outlet) -> float:
        """Page from `cursor` to the end of the pass; returns the wait before the next pass."""
        if cursor == CURSOR_DONE:
            if not self._recheck:
                self._recheck = True
                return self._config.recheck_interval_s
            cursor = None
        visited: set[str] = set()
        while not out.stopped:
            repos, next_cursor = await self._fetch(cursor)
            visited.add(cursor or "")
            if next_cursor is not None and next_cursor in visited:
                await self._write(out, repos, None)
                await self._cycle(out, cursor, next_cursor)
                break
            await self._write(out, repos, next_cursor or CURSOR_DONE)
            if next_cursor is None:
                self.passes += 1
                log.info("listing finished", extra={"host": self.host, "listed": self.listed})
                break
            cursor = next_cursor
        self._recheck = True
        return self._config.recheck_interval_s

    async def _cycle(self, out: Outlet, cursor: str | None, again: str) -> None:
        """The host sent a cursor this pass already visited: ledger the rest, end the pass."""
        self.cycles += 1
        reason = f"listRepos cursor does not advance: after {cursor!r} it sent {again!r}, visited before"
        await out.skip_to(cursor or "", CURSOR_DONE, reason)
        log.error("listing cursor does not advance: pass ended", extra={"host": self.host, "cursor": again})

    async def _fetch(self, cursor: str | None) -> tuple[list[Any], str | None]:
        """One page; a failure is a `SourceError` for the runner.

        Only failures the host answered (an HTTP status) count toward skip-ahead: a host that is
        down or unreachable is waited for, not skipped past (nor is a non-numeric cursor).
        """
        try:
            page = await self._xrpc.list_repos(self.url, cursor, limit=self._config.list_limit)
        except AtpError as exc:
            answered = getattr(exc, "status", None) is not None
            log.warning(
                "listRepos failed" if answered else "listRepos unavailable",
                extra={"host": self.host, "cursor": cursor, "error": f"{type(exc).__name__}: {exc}"},
            )
            retry_after = exc.retry_after_s if isinstance(exc, RateLimited) else None
            raise SourceError(
                f"{type(exc).__name__}: {exc}",
                skippable=answered,
                permanent=isinstance(exc, ForbiddenHost),
                retry_after_s=retry_after,
            ) from exc
        return page.repos, page.cursor

    async def _write(self, out: Outlet, repos: Sequence[Any], cursor: str | None) -> None:
        jobs, marks, bad = _jobs(self.url, repos, self._keys, self._partitions, self._source)
        dead = [bad_item_fields(self._stream, self.host, reason, repo) for reason, repo in bad]
        ids = await out.write(SourceBatch(jobs, marks=marks, dead_letters=dead, cursor=cursor))
        self.pages += 1
        self.seen += len(jobs)
        self.listed += sum(1 for i in ids if i is not None)

    async def retry_skipped(self) -> tuple[int, int]:
        """Re-page every ledgered range; returns (ranges recovered, ranges still failing)."""
        recovered = failing = 0
        for skipped in await skipped_ranges(self._redis, self._ledger):
            try:
                await self._repage(skipped.start, skipped.end)
            except AtpError as exc:
                failing += 1
                log.error(
                    "skipped range still failing",
                    extra={"host": self.host, "start": skipped.start, "error": str(exc)},
                )
                continue
            await resolve_skipped(self._redis, self._ledger, skipped.id)
            recovered += 1
        return recovered, failing

    async def _repage(self, start: str, end: str) -> None:
        """Page from `start` to the numeric cursor `end` (or to the last page: `!ingester-done`)."""
        cursor: str | None = start or None
        visited: set[str] = set()
        while True:
            page = await self._xrpc.list_repos(self.url, cursor, limit=self._config.list_limit)
            await self._write(self.runner, page.repos, None)
            if page.cursor is None or _reached(page.cursor, end):
                return
            visited.add(cursor or "")
            if page.cursor in visited:
                raise UpstreamError(f"listRepos cursor {page.cursor!r} does not advance", error="CursorCycle")
            cursor = page.cursor


def _reached(cursor: str, end: str) -> bool:
    """Whether a re-paged numeric range ends at `cursor` (an `!ingester-done` end never does)."""
    return end.isdigit() and cursor.isdigit() and int(cursor) >= int(end)


def bad_item_fields(
    stream: str, host: str, error: str, item: Any, *, kind: str = "listing"
) -> dict[bytes, bytes]:
    """DLQ fields for a listRepos item (kind "listing") or a listHosts item (kind "host")."""
    field = b"repo" if kind == "listing" else b"item"
    return dead_letter_fields(
        {field: repr(item).encode()[:ERROR_CAP], b"host": host.encode()},
        reason=f"invalid-{kind}-item",
        error=error,
        consumer="ingester",
        source_stream=stream,
    )
