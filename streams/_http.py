"""The metrics endpoint: Prometheus `/metrics`, `/healthz` (alive), `/startedz` (every component
started) and `/readyz` (ready, or why not: `streams/_readiness.py`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

_installed = False


def install_prometheus_provider() -> None:
    """Route OpenTelemetry meters into the Prometheus client registry (once per process)."""
    global _installed
    if not _installed:
        # Handler durations span milliseconds (an indexer batch) to minutes (a 100k-record repo).
        buckets = View(
            instrument_name="streamfill_handler_duration",
            aggregation=ExplicitBucketHistogramAggregation(
                [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
            ),
        )
        metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()], views=[buckets]))
        _installed = True


async def serve_metrics(
    host: str,
    port: int,
    is_started: Callable[[], bool],
    reasons: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the bound port (useful with port 0).

    `/readyz` is 200 `{"ready": true, "reasons": []}` once started and `reasons()` finds none,
    else 503 with them; `?ignore=warmup,lag` leaves those kinds out (a probe that must not fail
    during a long backfill)."""
    install_prometheus_provider()

    async def metrics_view(request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def startedz(request: web.Request) -> web.Response:
        ok = is_started()
        return web.json_response({"started": ok}, status=200 if ok else 503)

    async def readyz(request: web.Request) -> web.Response:
        found = [{"reason": "startup"}] if not is_started() else await reasons() if reasons else []
        ignored = set(request.query.get("ignore", "").split(","))
        found = [r for r in found if r.get("reason") not in ignored]
        return web.json_response({"ready": not found, "reasons": found}, status=503 if found else 200)

    app = web.Application()
    app.add_routes(
        [
            web.get("/metrics", metrics_view),
            web.get("/healthz", healthz),
            web.get("/startedz", startedz),
            web.get("/readyz", readyz),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    task_status.started(bound)
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
