"""The scan sources: passes periodically (`run`, `scan --every`), once (`scan`), or once to
completion (`run-once`). Each is a `streams.Source` run by its own `SourceRunner` (which owns the
loop, the waits between passes and stopping), and a Component for the worker."""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus

from streams import AdminError, Component, Keys, Outlet, RunnerConfig, SourceRunner
from streams.admin import trim
from workers.replayer.config import ReplayerConfig
from workers.replayer.es import ElasticClient, wait_for_es
from workers.replayer.index import IndexHandler
from workers.replayer.runs import RunTracker
from workers.replayer.scan import PassReport, Scanner


async def trim_streams(redis: aioredis.Redis, config: ReplayerConfig) -> None:
    """Trim what every group has acknowledged from both streams (they would grow forever)."""
    keys = Keys(config.prefix)
    for name in (config.stream, config.results_stream):
        with contextlib.suppress(AdminError):
            await trim(redis, keys, keys.stream(name), audited=False)


class _ScanSource(abc.ABC):
    """What both scan sources share: their runner (no Redis cursor: the ledger is the position),
    the components they stop once their passes are over, and the tidying after a pass."""

    name = "scan"

    def __init__(
        self,
        redis: aioredis.Redis,
        config: ReplayerConfig,
        scanner: Scanner,
        runs: RunTracker,
        after: Sequence[Component],
    ) -> None:
        self._redis = redis
        self._config = config
        self._scanner = scanner
        self._runs = runs
        self._after = after
        self.runner = SourceRunner(redis, self, None, RunnerConfig())

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.runner.run(task_status=task_status)
        # Only once the passes are over: a pass that failed (Redis lost: the worker restarts this
        # component, streams._supervise) must not stop the components that run after it.
        for component in self._after:
            component.stop()

    def stop(self) -> None:
        self.runner.stop()

    @abc.abstractmethod
    async def session(self, cursor: str | None, out: Outlet) -> float | None:
        """One pass; the wait before the next (None: the source is finished)."""

    def interrupt(self) -> None:
        self._scanner.stop()
        self._runs.interrupt()

    async def _tidy(self) -> None:
        await trim_streams(self._redis, self._config)
        self._runs.cleanup(self._config.cleanup_days)


class PeriodicScan(_ScanSource):
    """Scan passes every `interval_s` (after waiting for Elasticsearch, when `es` is given)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        config: ReplayerConfig,
        scanner: Scanner,
        runs: RunTracker,
        *,
        es: ElasticClient | None,
        interval_s: float | None,
        after: Sequence[Component] = (),
    ) -> None:
        super().__init__(redis, config, scanner, runs, after)
        self._es = es
        self._interval_s = interval_s  # None: one pass, then stop `after`
        self._es_wait: anyio.CancelScope | None = None
        self.reports: list[PassReport] = []

    def retune(self, interval_s: float) -> None:
        """A new interval between passes (a live override), from the next wait on; a single
        pass (`scan` without `--every`) stays single."""
        if self._interval_s is not None:
            self._interval_s = interval_s

    def interrupt(self) -> None:
        super().interrupt()
        if self._es_wait is not None:
            self._es_wait.cancel()

    async def session(self, cursor: str | None, out: Outlet) -> float | None:
        """One pass (the first once Elasticsearch answers); the wait before the next."""
        if self._es is not None:
            with anyio.CancelScope() as self._es_wait:
                await wait_for_es(self._es)
            self._es, self._es_wait = None, None
        if out.stopped:
            return None
        await self.one_pass()
        return self._interval_s

    async def one_pass(self) -> PassReport:
        report = await self._scanner.scan_pass()
        self.reports.append(report)
        await self._tidy()
        return report


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


class RunOnce(_ScanSource):
    """One complete pass: scan, then wait until the run tracker says every document of it is
    accepted or failed."""

    def __init__(
        self,
        redis: aioredis.Redis,
        config: ReplayerConfig,
        scanner: Scanner,
        runs: RunTracker,
        indexing: IndexHandler,
        *,
        timeout_s: float | None,
        after: Sequence[Component],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(redis, config, scanner, runs, after)
        self._index = indexing
        self._timeout_s = timeout_s
        self._clock = clock
        self.result: OnceResult | None = None

    async def session(self, cursor: str | None, out: Outlet) -> float | None:
        self.result = await self._pass(out)
        await self._tidy()
        return None

    async def _pass(self, out: Outlet) -> OnceResult:
        report = await self._scanner.scan_pass()
        waited = await self._runs.wait_complete(
            report.run,
            timeout_s=self._timeout_s,
            reconcile=self._scanner.reconcile,
            stopped=lambda: out.stopped,
            clock=self._clock,
        )
        left = waited.outstanding
        if waited.timed_out:
            return self._result(1, self._timed_out_reason(left), report, left)
        if left:
            return self._result(1, f"stopped by signal with {left} documents not yet indexed", report, left)
        return self._result(0, "", report, 0)

    def _result(self, status: int, reason: str, report: PassReport, left: int) -> OnceResult:
        runs = self._runs
        failed = report.failed + runs.failed_total
        return OnceResult(status, reason, runs.row(report.run), report, left, runs.indexed_total, failed)

    def _timed_out_reason(self, left: int) -> str:
        stats = self._index.statistics()
        if stats.unavailable_since is not None:
            down = round(time.monotonic() - stats.unavailable_since)
            why = f"elasticsearch unreachable for {down}s ({stats.last_error})"
        else:
            why = f"timed out after {self._timeout_s:g}s"
        return (
            f"{why}: {left} documents not yet indexed; they stay in {self._config.stream} for the next pass"
        )
