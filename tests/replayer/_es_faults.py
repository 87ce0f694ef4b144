"""Injected faults of `FakeElasticsearch`: failed requests, failed bulk items, mapping rejections
and a delay on every answer, each worded as ES words the real failure.

Set from the test thread and consumed by the server's loop, behind one lock. `fail_requests`
matches a glob on the request path; `fail_items` and `reject_mapping` apply to bulk items only.
Refusing connections (`down`) and holding requests (`hang`) belong to the server's loop, not here.
"""

from __future__ import annotations

import fnmatch
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.replayer._es_bulk import BulkItem
from tests.replayer._es_errors import EsError
from tests.replayer._es_mapping import field_paths, mapping_rejection


@dataclass
class _Countdown:
    status: int
    times: int
    pattern: str = "*"
    match: Callable[[str, str], bool] | None = None


class Faults:
    """Injected faults, set from the test thread and consumed by the server's loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._requests: list[_Countdown] = []
        self._items: list[_Countdown] = []
        self._rejections: list[tuple[str, str]] = []
        self.delay_s = 0.0

    # -- set from the test thread ----------------------------------------------------------------

    def fail_requests(self, status: int, times: int, path: str) -> None:
        with self._lock:
            self._requests.append(_Countdown(status, times, pattern=path))

    def fail_items(self, status: int, times: int, match: Callable[[str, str], bool] | None) -> None:
        with self._lock:
            self._items.append(_Countdown(status, times, match=match))

    def reject_mapping(self, field: str, index_pattern: str) -> None:
        with self._lock:
            self._rejections.append((field, index_pattern))

    def slow(self, delay_s: float) -> None:
        with self._lock:
            self.delay_s = delay_s

    def clear(self) -> None:
        with self._lock:
            self._reset()

    # -- consumed by the server's loop -----------------------------------------------------------

    def request_error(self, path: str, n_bytes: int) -> EsError | None:
        with self._lock:
            fault = _take(self._requests, lambda f: fnmatch.fnmatchcase(path, f.pattern))
        return _request_error(fault.status, n_bytes) if fault else None

    def item_error(self, item: BulkItem) -> EsError | None:
        index, doc_id = item.index or "", item.id or ""
        with self._lock:
            fault = _take(self._items, lambda f: f.match is None or f.match(index, doc_id))
            rejections = list(self._rejections)
        if fault:
            return _item_error(fault.status, item)
        source = _source_of(item) if rejections else None
        paths = set(field_paths(source)) if source else set()
        for path, pattern in rejections:
            if path in paths and fnmatch.fnmatchcase(index, pattern):
                return mapping_rejection(item, source or {}, path)
        return None


def _take(faults: list[_Countdown], applies: Callable[[_Countdown], bool]) -> _Countdown | None:
    for fault in faults:
        if applies(fault):
            fault.times -= 1
            if fault.times <= 0:
                faults.remove(fault)
            return fault
    return None


def _source_of(item: BulkItem) -> dict[str, Any] | None:
    """The fields an item would write (an update's partial doc or upsert), when its line is JSON."""
    try:
        body = json.loads(item.raw or "")
    except json.JSONDecodeError:
        return None
    if item.action == "update" and isinstance(body, dict):
        body = {**(body.get("upsert") or {}), **(body.get("doc") or {})}
    return body if isinstance(body, dict) else None


def _request_error(status: int, n_bytes: int) -> EsError:
    """What ES answers a whole request with, for an injected status."""
    if status == 429:
        return EsError(
            429,
            "es_rejected_execution_exception",
            "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
            f"replica_bytes=0, all_bytes=0, coordinating_operation_bytes={n_bytes}, "
            "max_coordinating_and_primary_bytes=107374182]",
        )
    if status == 503:
        return EsError(
            503,
            "cluster_block_exception",
            "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];",
        )
    return EsError(status, "exception", f"injected failure with status [{status}]")


def _item_error(status: int, item: BulkItem) -> EsError:
    """What ES puts in a bulk item that failed with an injected status."""
    shard = f"[{item.index}][0]"
    if status == 429:
        return EsError(
            429,
            "es_rejected_execution_exception",
            f"rejected execution of primary operation [shard_detail={shard}, "
            f"shard_operation_bytes={len(item.raw or '')}, "
            "max_coordinating_and_primary_bytes=107374182]",
        )
    if status == 503:
        return EsError(
            503,
            "unavailable_shards_exception",
            f"{shard} primary shard is not active Timeout: [1m], request: [BulkShardRequest "
            f"[{shard}] containing [1] requests]",
            index_uuid="_na_",
            shard="0",
            index=item.index,
        )
    return EsError(status, "exception", f"injected item failure with status [{status}]")
