"""The components that drive scan passes: periodically (`run`, `scan --interval`), once (`scan`),
or once to completion (`run-once`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus

from streams import Component
from workers.replayer.config import ReplayerConfig
from workers.replayer.es import ElasticClient
from workers.replayer.index import IndexHandler
from workers.replayer.scan import PassReport
from workers.replayer.service import Scanning, trim_streams, wait_for_es

log = logging.getLogger("streamfill.replayer")

# While run-once waits, how often it re-checks in-flight entries against the stream (finds
# entries dead-lettered without a result, e.g. after crashing their worker repeatedly).
RECONCILE_EVERY_S = 10.0


class PeriodicScan:
    """Scan passes every `interval_s` (after waiting for Elasticsearch, when `es` is given)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        config: ReplayerConfig,
        scanning: Scanning,
        *,
        es: ElasticClient | None,
        interval_s: float | None,
        after: Sequence[Component] = (),
    ) -> None:
        self._redis = redis
        self._config = config
        self._scanning = scanning
        self._es = es
        self._interval_s = interval_s  # None: one pass, then stop `after`
        self._after = after
        self._stop = anyio.Event()
        self.reports: list[PassReport] = []

    def retune(self, interval_s: float) -> None:
        """A new interval between passes (a live override), from the next wait on; a single
        pass (`scan` without `--every`) stays single."""
        if self._interval_s is not None:
            self._interval_s = interval_s

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self._es is not None:
            await self._wait_for_es()  # the start-up pass runs once Elasticsearch answers
        while not self._stop.is_set():
            await self.one_pass()
            if self._interval_s is None:
                break
            with anyio.move_on_after(self._interval_s):
                await self._stop.wait()
        # Only once the passes are over: a pass that failed (Redis lost: the worker restarts this
        # loop, streams._supervise) must not stop the components that run after it.
        for component in self._after:
            component.stop()

    async def _wait_for_es(self) -> None:
        assert self._es is not None
        async with anyio.create_task_group() as tg:

            async def until_stopped() -> None:
                await self._stop.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(until_stopped)
            await wait_for_es(self._es)
            tg.cancel_scope.cancel()

    async def one_pass(self) -> PassReport:
        report = await self._scanning.scanner.scan_pass()
        self.reports.append(report)
        await trim_streams(self._redis, self._config)
        removed = self._scanning.ledger.cleanup(self._config.cleanup_days)
        if removed:
            log.info("old runs cleaned up", extra={"runs": removed})
        return report

    def stop(self) -> None:
        self._stop.set()
        self._scanning.scanner.stop()


@dataclass(frozen=True)
class OnceResult:
    """How `run-once` ended: exit status, the one-line reason when non-zero, the run's counts."""

    status: int
    reason: str
    run: dict[str, object]
    report: PassReport | None
    outstanding: int
    indexed: int = 0  # documents accepted during this pass (also those enqueued by earlier runs)
    failed: int = 0  # files recorded failed during this pass (malformed, or refused)


class RunOnce:
    """One complete pass: scan, then wait until every document of it is accepted or failed."""

    def __init__(
        self,
        redis: aioredis.Redis,
        config: ReplayerConfig,
        scanning: Scanning,
        indexing: IndexHandler,
        *,
        timeout_s: float | None,
        after: Sequence[Component],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._config = config
        self._scanning = scanning
        self._index = indexing
        self._timeout_s = timeout_s
        self._after = after
        self._clock = clock
        self._stop = anyio.Event()
        self.result: OnceResult | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self.result = await self._pass()
        await self._tidy()
        for component in self._after:  # not after a failed pass: it is restarted (see above)
            component.stop()

    def stop(self) -> None:
        self._stop.set()
        self._scanning.scanner.stop()

    async def _tidy(self) -> None:
        await trim_streams(self._redis, self._config)
        self._scanning.ledger.cleanup(self._config.cleanup_days)

    async def _pass(self) -> OnceResult:
        deadline = None if self._timeout_s is None else self._clock() + self._timeout_s
        report = await self._scanning.scanner.scan_pass()
        ledger = self._scanning.ledger
        last_reconcile = self._clock()
        while (left := ledger.inflight_count(up_to_run=report.run)) and not self._stop.is_set():
            if deadline is not None and self._clock() >= deadline:
                return self._timed_out(report, left)
            if self._clock() - last_reconcile >= RECONCILE_EVERY_S:
                await self._scanning.scanner.reconcile()
                last_reconcile = self._clock()
            wait = (
                RECONCILE_EVERY_S
                if deadline is None
                else max(0.0, min(RECONCILE_EVERY_S, deadline - self._clock()))
            )
            with anyio.move_on_after(wait):
                await self._scanning.folder.changed.wait()
        left = ledger.inflight_count(up_to_run=report.run)
        run = ledger.run(report.run) or {}
        if left:
            ledger.mark_incomplete(report.run)
            return self._result(
                1, f"stopped by signal with {left} documents not yet indexed", run, report, left
            )
        return self._result(0, "", run, report, 0)

    def _result(
        self, status: int, reason: str, run: dict[str, object], report: PassReport, left: int
    ) -> OnceResult:
        folder = self._scanning.folder
        failed = report.failed + folder.failed_total
        return OnceResult(status, reason, run, report, left, folder.indexed_total, failed)

    def _timed_out(self, report: PassReport, left: int) -> OnceResult:
        ledger = self._scanning.ledger
        ledger.mark_incomplete(report.run)
        stats = self._index.statistics()
        if stats.unavailable_since is not None:
            down = round(time.monotonic() - stats.unavailable_since)
            why = f"elasticsearch unreachable for {down}s ({stats.last_error})"
        else:
            why = f"timed out after {self._timeout_s:g}s"
        reason = (
            f"{why}: {left} documents not yet indexed; they stay in {self._config.stream} for the next pass"
        )
        return self._result(1, reason, ledger.run(report.run) or {}, report, left)
