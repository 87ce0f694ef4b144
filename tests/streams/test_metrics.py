"""The metrics endpoint serves Prometheus text with the runtime's counters, and health probes."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from streams import DONE, Consumer, ConsumerConfig, Entry, Keys, Outcome
from streams._http import serve_metrics
from streams._worker import _record_stream

pytestmark = pytest.mark.anyio


async def test_metrics_health_and_readiness(redis_client: aioredis.Redis, prefix: str) -> None:
    stream = Keys(prefix).stream("m")
    seconds, micros = await redis_client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    for i in range(5):  # written 9 s ago, by their ids
        await redis_client.xadd(stream, {"n": str(i)}, id=f"{now_ms - 9000 + i}-0")
    await redis_client.xgroup_create(stream, "late", id="0")  # reads nothing
    ready = False
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_metrics, "127.0.0.1", 0, lambda: ready)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/startedz")).status_code == 503
            response = await http.get("/readyz")
            assert response.status_code == 503
            assert response.json() == {"ready": False, "reasons": [{"reason": "startup"}]}
            ready = True
            assert (await http.get("/startedz")).status_code == 200
            response = await http.get("/readyz")
            assert response.status_code == 200 and response.json() == {"ready": True, "reasons": []}

            async def handler(entries: Sequence[Entry]) -> Sequence[Outcome]:
                return [DONE] * len(entries)

            await Consumer(
                redis_client, ConsumerConfig(stream, "g", "c", block_ms=20), handler
            ).run_until_idle()
            await _record_stream(redis_client, stream)
            text = (await http.get("/metrics")).text
        tg.cancel_scope.cancel()
    assert sample(text, "streamfill_entries_processed_total", stream) == 5.0
    assert sample(text, "streamfill_stream_length", stream) == 5.0
    assert sample(text, "streamfill_group_pending", stream, 'group="g"') == 0.0
    assert sample(text, "streamfill_group_lag_seconds", stream, 'group="g"') == 0.0
    assert 9.0 <= sample(text, "streamfill_group_lag_seconds", stream, 'group="late"') < 10.0
    assert sample(text, "streamfill_handler_duration_seconds_count", stream) >= 1


def sample(text: str, name: str, stream: str, label: str = "") -> float:
    """The value of the Prometheus sample `name` labelled with `stream` (and `label`)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and f'stream="{stream}"' in line and label in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} for {stream}")
