"""Running a worker process: signals, one task group, metrics and health endpoints, stats polling.

`run_worker` starts every component in one anyio task group. SIGTERM/SIGINT call each component's
`stop()`: consumers stop reading, finish and ack in-flight work, producers flush; the process then
exits 0. Work still running `grace_s` after the signal (a handler blocked on backpressure, a hung
download) is cancelled and stays pending for the next start, so a worker always exits within its
grace period; a second signal cancels at once. A component that crashes cancels the group and
the exception propagates (the orchestrator restarts the process): no task dies silently. A
component that fails because Redis went away is restarted once Redis answers again, for up to
`redis_reconnect_s` (`streams._supervise`); after that the worker exits with `RedisUnavailable`.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus

from streams._keys import dlq_key
from streams._lag import group_lags
from streams._metrics import set_gauge
from streams._readiness import Check, Reason, evaluate
from streams._supervise import supervise

log = logging.getLogger("streamfill.worker")


class Component(Protocol):
    """Something a worker runs: a consumer, a source loop, a poller."""

    async def run(self, *, task_status: TaskStatus[None] = ...) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class WorkerOptions:
    name: str
    metrics_port: int | None = None
    # Loopback unless the deployment says otherwise (METRICS_HOST; the container image: 0.0.0.0).
    metrics_host: str = "127.0.0.1"
    watched_streams: tuple[str, ...] = ()
    stats_interval_s: float = 5.0
    grace_s: float | None = None  # after a signal, cancel what is still running after this long
    # How long a component waits for a lost Redis before the worker gives up (None: it does not wait).
    redis_reconnect_s: float | None = 60.0
    # /readyz: (dependency name, check) pairs, evaluated per request (streams/_readiness.py)
    readiness: tuple[tuple[str, Check], ...] = ()


async def run_worker(
    redis: aioredis.Redis,
    components: Sequence[Component],
    options: WorkerOptions,
    *,
    ready: Callable[[], Awaitable[None]] | None = None,
    helpers: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> int:
    """Run `components` until they finish or a signal stops them; returns the exit status.

    `helpers` run beside them (a heartbeat, a settings poll) and are cancelled when they finish.
    """
    state = _State(options.grace_s)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_signals, components, state, tg.cancel_scope)
        for helper in helpers:
            tg.start_soon(helper)
        if options.metrics_port is not None:
            from streams._http import serve_metrics

            checks = options.readiness

            async def reasons() -> list[Reason]:
                return await evaluate(checks)

            await tg.start(serve_metrics, options.metrics_host, options.metrics_port, state.is_ready, reasons)
            if options.watched_streams:  # the gauges are only read through /metrics
                tg.start_soon(_poll_stats, redis, options.watched_streams, options.stats_interval_s)
        async with anyio.create_task_group() as work:
            state.work = work.cancel_scope
            if state.signal is not None:  # stopped while the helpers started
                state.start_grace()
            for component in components:
                if options.redis_reconnect_s:
                    window, stopping = options.redis_reconnect_s, state.stopping
                    await work.start(supervise, component, redis, window, stopping)
                else:
                    await work.start(component.run)
            state.ready = True
            # What starting cost this process (imports, connections, groups): each replica pays it.
            log.info("worker ready", extra={"worker": options.name, "startup_cpu_s": time.process_time()})
            if ready is not None:
                await ready()
        if work.cancel_scope.cancelled_caught:
            log.warning("grace period over: work still in flight stays pending for the next start")
        tg.cancel_scope.cancel()  # components are done: stop the helpers
    log.info("worker exited", extra={"worker": options.name, "signal": state.signal})
    return 0


class _State:
    def __init__(self, grace_s: float | None) -> None:
        self.ready = False
        self.signal: str | None = None
        self.grace_s = grace_s
        self.work: anyio.CancelScope | None = None

    def is_ready(self) -> bool:
        return self.ready

    def stopping(self) -> bool:
        return self.signal is not None

    def start_grace(self) -> None:
        """From now on, the components have `grace_s` to finish."""
        if self.work is not None and self.grace_s is not None:
            self.work.deadline = min(self.work.deadline, anyio.current_time() + self.grace_s)


async def _signals(components: Sequence[Component], state: _State, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if state.signal is not None:
                log.warning("second signal: exiting without waiting")
                scope.cancel()
                return
            state.signal = signal.Signals(signum).name
            log.info("signal: stopping gracefully", extra={"signal": state.signal, "grace_s": state.grace_s})
            state.start_grace()
            for component in components:
                component.stop()


async def _poll_stats(redis: aioredis.Redis, streams: Sequence[str], interval_s: float) -> None:
    """Refresh the stream-length / lag / pending gauges that /metrics reports."""
    while True:
        for stream in streams:
            try:
                await _record_stream(redis, stream)
            except Exception as exc:  # a missing stream or a blip: metrics must not kill a worker
                log.debug("stats poll failed", extra={"stream": stream, "error": str(exc)})
        await anyio.sleep(interval_s)


async def _record_stream(redis: aioredis.Redis, stream: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(stream)
        pipe.xlen(dlq_key(stream))
        pipe.xinfo_groups(stream)
        length, dlq, groups = await pipe.execute()
    set_gauge("streamfill_stream_length", length, stream=stream)
    set_gauge("streamfill_dlq_length", dlq, stream=stream)
    for g in groups:
        name: Any = g["name"]
        group = name.decode() if isinstance(name, bytes) else str(name)
        if g.get("lag") is not None:
            set_gauge("streamfill_group_lag", int(g["lag"]), stream=stream, group=group)
        set_gauge("streamfill_group_pending", int(g["pending"]), stream=stream, group=group)
    for lag in await group_lags(redis, stream):
        set_gauge("streamfill_group_lag_seconds", lag.seconds, stream=stream, group=lag.group)
