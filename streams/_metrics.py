"""OpenTelemetry instruments shared by the runtime's components.

With no MeterProvider installed (library use, tests) the instruments are no-ops; `serve_metrics`
installs a Prometheus-backed provider for worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation


@dataclass(frozen=True)
class Instruments:
    """The counters and histograms the runtime records into."""

    processed: Any
    failed: Any
    dead_lettered: Any
    reclaimed: Any
    handler_duration: Any
    produced: Any
    backpressure_waits: Any
    skipped_ranges: Any
    throttled: Any
    replay_events: Any
    replay_bytes: Any


_instruments: Instruments | None = None
# Last readings of the gauges, refreshed by the worker's stats poller (observable gauge callbacks
# must be synchronous, and reading a stream's length is a Redis round trip).
_gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
GAUGES = {
    "streamfill_stream_length": "entries in a stream (XLEN)",
    "streamfill_group_lag": "entries not yet delivered to a group",
    "streamfill_group_pending": "entries delivered to a group and not yet acked",
    "streamfill_group_lag_seconds": "age of the oldest entry a group has not acknowledged (0: none)",
    "streamfill_dlq_length": "entries in a stream's dead-letter stream",
    "streamfill_backpressure_active": "1 while a producer is blocked at the high-water mark",
    "streamfill_throttle_active": "1 while a worker's bulk production is paused on live lag",
}


def instruments() -> Instruments:
    """The process-wide instruments, created on first use from the current MeterProvider."""
    global _instruments
    if _instruments is None:
        meter = metrics.get_meter("streamfill")
        _instruments = Instruments(
            processed=meter.create_counter("streamfill_entries_processed", description="entries acked"),
            failed=meter.create_counter("streamfill_entries_failed", description="handler failures"),
            dead_lettered=meter.create_counter(
                "streamfill_entries_dead_lettered", description="entries moved to a DLQ"
            ),
            reclaimed=meter.create_counter(
                "streamfill_entries_reclaimed", description="entries taken over by XAUTOCLAIM"
            ),
            handler_duration=meter.create_histogram(
                "streamfill_handler_duration", unit="s", description="batch handler duration"
            ),
            produced=meter.create_counter("streamfill_entries_produced", description="entries XADDed"),
            backpressure_waits=meter.create_counter(
                "streamfill_backpressure_waits", description="times a producer blocked at the high mark"
            ),
            skipped_ranges=meter.create_counter(
                "streamfill_skipped_ranges", description="cursor ranges skipped ahead and ledgered"
            ),
            # unit "s": the Prometheus exporter names it streamfill_throttled_seconds_total.
            throttled=meter.create_counter(
                "streamfill_throttled", unit="s", description="seconds bulk production waited on live lag"
            ),
            replay_events=meter.create_counter(
                "streamfill_replay_events", description="entries replayed onto a stream"
            ),
            replay_bytes=meter.create_counter(
                "streamfill_replay_bytes", description="bytes (field names and values) replayed onto a stream"
            ),
        )
        for name, description in GAUGES.items():
            meter.create_observable_gauge(name, callbacks=[_observer(name)], description=description)
    return _instruments


def set_gauge(name: str, value: float, **attributes: str) -> None:
    """Record the latest reading of one of GAUGES."""
    _gauges.setdefault(name, {})[tuple(sorted(attributes.items()))] = value


def _observer(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        for attrs, value in list(_gauges.get(name, {}).items()):
            yield Observation(value, dict(attrs))

    return observe
