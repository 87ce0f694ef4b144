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
from typing import Any, cast

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus

from atp import AtpError, ForbiddenHost, InvalidDid, RateLimited, UpstreamError
from atp.did import validate_did
from atp.xrpc import XrpcClient
from schemas import RepoJob, encode_entry
from streams import (
    CURSOR_DONE,
    ERROR_CAP,
    Backoff,
    Keys,
    Mark,
    PartitionedProducer,
    Producer,
    SkipAhead,
    SkipDecision,
    dead_letter_fields,
    dlq_key,
    record_skip,
    resolve_skipped,
    skipped_ranges,
)
from workers.ingester.config import IngesterConfig
from workers.ingester.register import listed_mark

log = logging.getLogger("streamfill.ingester.listing")
STREAM = "repo_backfill"


def _jobs(
    host: str, repos: Sequence[Any], stream: str, keys: Keys, partitions: int = 1
) -> tuple[list[dict[bytes, bytes]], list[Mark | None], list[tuple[str, Any]]]:
    """Valid repos become jobs with their register marks; malformed ones go to the DLQ with a reason."""
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
            jobs.append(encode_entry(stream, job))
            marks.append(listed_mark(keys, STREAM, did, rev, job.active, partitions=partitions))
        except (InvalidDid, ValueError, TypeError) as exc:
            bad.append((f"{type(exc).__name__}: {exc}", repo))
    return jobs, marks, bad


class ListingSource:
    """Pages one host's listRepos into repo_backfill; a runtime Component when it is a relay.

    A relay's source waits for an unreachable relay however long it takes. A PDS's source (from
    host discovery) has `give_up_after`: after that many failures it cannot skip past (no answer,
    or a non-numeric cursor) it ends the pass, keeping its cursor for the next round, so that one
    dead host never holds a paging slot.
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
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._config = config
        self.host = host  # names the cursor keys
        self.url = url or host  # where to send requests (may carry a scheme)
        self._producer = producer
        # The register's buckets live in the slot of the partition their jobs go to.
        self._partitions = len(producer.partitions) if isinstance(producer, PartitionedProducer) else 1
        self._xrpc = xrpc
        self._stream = producer.config.stream
        self._cursor_key = keys.cursor(STREAM, host)
        self._ledger = keys.ledger(STREAM, host)
        self._skip = SkipAhead(config.max_consecutive_errors, config.skip_ahead)
        self._backoff = Backoff(base_s=0.5, cap_s=30.0)
        self._give_up_after = give_up_after
        self._unreachable = 0
        self._skipped = False
        self._stop = anyio.Event()
        self.pages = 0
        self.listed = 0  # jobs written (new or changed repos)
        self.seen = 0  # valid repos read, written or not
        self.passes = 0
        self.abandoned = 0
        self.cycles = 0  # passes ended by a cursor that did not advance

    def retune(self, config: IngesterConfig) -> None:
        """Apply the live-tunable settings (the re-check interval) from the next wait on."""
        self._config = config

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Page to the end; then, every `recheck_interval_s`, page the whole host again."""
        task_status.started()
        recheck = False
        while not self._stop.is_set():
            if not await self.run_pass(recheck=recheck):
                recheck = True
                await self._wait(self._config.recheck_interval_s)

    async def run_pass(self, *, recheck: bool) -> bool:
        """Finish the current pass; with `recheck`, a finished host starts a new one from the start.

        Returns whether there is more to do at once (stopped, skipped ahead or given up: False).
        """
        raw = cast("bytes | None", await self._redis.get(self._cursor_key))  # a bytes client
        if raw == CURSOR_DONE.encode():
            if not recheck:
                return False
            raw = None
        return await self._page_until_done(raw.decode() if raw else None)

    async def _wait(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._stop.wait()

    async def _page_until_done(self, cursor: str | None) -> bool:
        """One listing pass from `cursor` to the end; True when it skipped ahead (go on at once)."""
        self._unreachable = 0
        visited: set[str] = set()
        while not self._stop.is_set():
            page = await self._fetch(cursor)
            if page is None:
                return self._skipped
            repos, next_cursor = page
            visited.add(cursor or "")
            if next_cursor is not None and next_cursor in visited:
                await self._write(repos, [])
                await self._cycle(cursor, next_cursor)
                return False
            await self._write(repos, [(self._cursor_key, next_cursor or CURSOR_DONE)])
            if next_cursor is None:
                self.passes += 1
                log.info("listing finished", extra={"host": self.host, "listed": self.listed})
                return False
            cursor = next_cursor
        return False

    async def _cycle(self, cursor: str | None, again: str) -> None:
        """The host sent a cursor this pass already visited: ledger the rest, end the pass."""
        self.cycles += 1
        decision = SkipDecision(retry_same=False, skip_from=cursor or "", skip_to=CURSOR_DONE, failures=1)
        reason = f"listRepos cursor does not advance: after {cursor!r} it sent {again!r}, visited before"
        await record_skip(self._redis, self._cursor_key, self._ledger, decision, reason)
        log.error("listing cursor does not advance: pass ended", extra={"host": self.host, "cursor": again})

    async def _fetch(self, cursor: str | None) -> tuple[list[Any], str | None] | None:
        """One page, retried with backoff; None after a skip-ahead, a give-up or when stopping."""
        self._skipped = False
        while not self._stop.is_set():
            try:
                page = await self._xrpc.list_repos(self.url, cursor, limit=self._config.list_limit)
            except AtpError as exc:
                if await self._failed(cursor, exc):
                    return None
                continue
            self._skip.succeeded()
            self._unreachable = 0
            return page.repos, page.cursor
        return None

    async def _failed(self, cursor: str | None, exc: AtpError) -> bool:
        """Count a failure at `cursor`; back off, or skip ahead or give up (returns True).

        Only failures the host answered (an HTTP status) count toward skip-ahead: a host that is
        down or unreachable is waited for, not skipped past. A non-numeric cursor cannot be
        advanced, so it is retried with backoff, never skipped.
        """
        answered = getattr(exc, "status", None) is not None
        skippable = answered and (cursor or "0").isdigit()
        if not skippable:
            self._unreachable += 1
            log.warning(
                "listRepos unavailable", extra={"host": self.host, "cursor": cursor, "error": str(exc)}
            )
            limit = self._give_up_after
            if limit is not None and (isinstance(exc, ForbiddenHost) or self._unreachable >= limit):
                self.abandoned += 1
                log.error("listing pass given up", extra={"host": self.host, "cursor": cursor})
                return True
            await self._wait(self._backoff.delay(self._unreachable))
            return False
        decision = self._skip.failed(cursor or "")
        log.warning(
            "listRepos failed",
            extra={
                "host": self.host,
                "cursor": cursor,
                "failures": decision.failures or self._skip.consecutive_failures,
                "error": f"{type(exc).__name__}: {exc}",
            },
        )
        if not decision.retry_same:
            reason = f"{decision.failures} consecutive failures: {type(exc).__name__}: {exc}"
            await record_skip(self._redis, self._cursor_key, self._ledger, decision, reason)
            self._skipped = True
            log.error(
                "skipped ahead", extra={"host": self.host, "from": decision.skip_from, "to": decision.skip_to}
            )
            return True
        delay = exc.retry_after_s if isinstance(exc, RateLimited) and exc.retry_after_s else None
        await self._wait(delay if delay is not None else self._backoff.delay(self._skip.consecutive_failures))
        return False

    async def _write(self, repos: Sequence[Any], cursors: list[tuple[str, str]]) -> None:
        jobs, marks, bad = _jobs(self.url, repos, self._stream, self._keys, self._partitions)
        extra = [
            (dlq_key(self._stream), bad_item_fields(self._stream, self.host, reason, repo))
            for reason, repo in bad
        ]
        ids = await self._producer.send_marked(jobs, marks, cursors=cursors, extra=extra)
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
            await self._write(page.repos, [])
            if page.cursor is None or (
                end.isdigit() and page.cursor.isdigit() and int(page.cursor) >= int(end)
            ):
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
