"""The HTTP face of `FakeElasticsearch`: the aiohttp application, its routes and ES's request-level
answers (JSON bodies, `X-elastic-product`, error envelopes, 400/405/406 as ES words them).

`HttpApi` serves a `Store` with `Faults` applied: a middleware holds requests while the server
hangs, refuses unsupported Content-Types, answers injected request failures (still logging and
counting a failed `_bulk`'s items), then delays the answer. Unrecognized query parameters are
refused, never ignored. The event loop, the thread and the port belong to `_es_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.replayer._es_bulk import BulkItem, failed_item, parse_bulk
from tests.replayer._es_errors import EsError, bad_request
from tests.replayer._es_faults import Faults
from tests.replayer._es_store import SHARDS, Store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

VERSION = "8.15.0"
_INDEX = "{index:_all|[^_/][^/]*}"  # ES index names never start with "_"
_GLOBAL_PARAMS = frozenset({"pretty", "human", "error_trace"})
# Real ES parameters this fake does not honour: refused rather than silently ignored.
_UNIMPLEMENTED_PARAMS = frozenset(
    {
        "filter_path",
        "q",
        "ignore_unavailable",
        "allow_no_indices",
        "expand_wildcards",
        "_source",
        "_source_includes",
        "_source_excludes",
        "require_data_stream",
        "list_executed_pipelines",
    }
)
# Every wait_for_* condition holds at once on this one-node, always-green cluster.
_HEALTH_PARAMS = frozenset(
    {
        "wait_for_status",
        "timeout",
        "master_timeout",
        "level",
        "local",
        "wait_for_nodes",
        "wait_for_events",
        "wait_for_active_shards",
        "wait_for_no_relocating_shards",
        "wait_for_no_initializing_shards",
    }
)
_BODY_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/vnd.elasticsearch+json",
        "application/vnd.elasticsearch+x-ndjson",
    }
)


def _check_params(request: web.Request, supported: frozenset[str] = frozenset()) -> None:
    unknown = sorted(set(request.query) - supported - _GLOBAL_PARAMS)
    if not unknown:
        return
    for name in unknown:
        if name in _UNIMPLEMENTED_PARAMS:
            raise bad_request(f"parameter [{name}] is not implemented by this fake Elasticsearch")
    noun = "parameter" if len(unknown) == 1 else "parameters"
    listed = ", ".join(f"[{p}]" for p in unknown)
    raise bad_request(f"request [{request.path}] contains unrecognized {noun}: {listed}")


def _refresh_param(request: web.Request) -> bool:
    value = request.query.get("refresh")
    if value in (None, "false"):
        return False
    if value in ("", "true", "wait_for"):
        return True
    raise bad_request(f"Unknown value for refresh: [{value}].")


def _json(request: web.Request, body: Any, status: int = 200) -> web.Response:
    content_type = "application/json"
    if "application/vnd.elasticsearch+json" in request.headers.get("Accept", ""):
        content_type = "application/vnd.elasticsearch+json;compatible-with=8"
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={"Content-Type": content_type, "X-elastic-product": "Elasticsearch"},
    )


class HttpApi:
    """ES's routes over a store, with injected faults; `unhung` is cleared while the server hangs."""

    def __init__(
        self, store: Store, faults: Faults, bulk_log: list[tuple[int, int]], unhung: asyncio.Event
    ) -> None:
        self.store, self.faults, self.bulk_log, self.unhung = store, faults, bulk_log, unhung

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._faulty, self._errors], client_max_size=100 * 1024 * 1024)
        r = app.router
        r.add_get("/", self._root)
        r.add_get("/_cluster/health", self._health)
        for path in ("/_bulk", f"/{_INDEX}/_bulk"):
            r.add_post(path, self._bulk)
            r.add_put(path, self._bulk)
        for path in ("/_count", f"/{_INDEX}/_count"):
            r.add_get(path, self._count)
            r.add_post(path, self._count)
        for path in ("/_refresh", f"/{_INDEX}/_refresh"):
            r.add_get(path, self._refresh)
            r.add_post(path, self._refresh)
        r.add_get(f"/{_INDEX}/_doc/{{id}}", self._get_doc)
        r.add_get("/_cat/indices", self._cat_indices)
        return app

    # -- middlewares ---------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """ES's error bodies for `EsError`, unknown routes and wrong methods."""
        try:
            return await handler(request)
        except EsError as exc:
            return _json(request, exc.envelope(), exc.status)
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            reason = (
                f"Incorrect HTTP method for uri [{request.path_qs}] and method [{request.method}], "
                f"allowed: [{allowed}]"
            )
            return _json(request, {"error": reason, "status": 405}, 405)
        except web.HTTPNotFound:
            reason = f"no handler found for uri [{request.path_qs}] and method [{request.method}]"
            return _json(request, {"error": reason}, 400)

    @web.middleware
    async def _faulty(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Hang, Content-Type check, injected request failures, then the handler, then the delay."""
        await self.unhung.wait()
        content_type = request.headers.get("Content-Type", "")
        if request.body_exists and content_type.split(";")[0].strip().lower() not in _BODY_TYPES:
            reason = f"Content-Type header [{content_type}] is not supported"
            return _json(request, {"error": reason, "status": 406}, 406)
        body = await request.read()
        error = self.faults.request_error(request.path, len(body))
        response: web.StreamResponse
        if error is not None:
            if request.path.endswith("/_bulk"):
                with contextlib.suppress(EsError):
                    self._receive_bulk(body, request.match_info.get("index"))
            response = _json(request, error.envelope(), error.status)
        else:
            response = await handler(request)
        if self.faults.delay_s > 0:
            await asyncio.sleep(self.faults.delay_s)
        return response

    # -- cluster -------------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        _check_params(request)
        return _json(
            request,
            {
                "name": "fake-es-node",
                "cluster_name": "elasticsearch",
                "cluster_uuid": "fAkEeLaStIcSeArCh0000w",
                "version": {
                    "number": VERSION,
                    "build_flavor": "default",
                    "build_type": "docker",
                    "build_hash": "0" * 40,
                    "build_date": "2024-08-05T10:05:34.233336849Z",
                    "build_snapshot": False,
                    "lucene_version": "9.11.1",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0",
                },
                "tagline": "You Know, for Search",
            },
        )

    async def _health(self, request: web.Request) -> web.Response:
        _check_params(request, _HEALTH_PARAMS)
        with self.store.lock:
            shards = len(self.store.indices)
        return _json(
            request,
            {
                "cluster_name": "elasticsearch",
                "status": "green",
                "timed_out": False,
                "number_of_nodes": 1,
                "number_of_data_nodes": 1,
                "active_primary_shards": shards,
                "active_shards": shards,
                "relocating_shards": 0,
                "initializing_shards": 0,
                "unassigned_shards": 0,
                "delayed_unassigned_shards": 0,
                "number_of_pending_tasks": 0,
                "number_of_in_flight_fetch": 0,
                "task_max_waiting_in_queue_millis": 0,
                "active_shards_percent_as_number": 100.0,
            },
        )

    async def _cat_indices(self, request: web.Request) -> web.Response:
        _check_params(request, frozenset({"format"}))
        rows = self.store.cat()
        if request.query.get("format") == "json":
            return _json(request, rows)
        text = "".join(" ".join(row.values()) + "\n" for row in rows)
        return web.Response(text=text, headers={"X-elastic-product": "Elasticsearch"})

    # -- bulk ----------------------------------------------------------------------------------

    def _receive_bulk(self, body: bytes, default_index: str | None) -> list[BulkItem]:
        """Parse a bulk body, logging the request and an attempt at each of its documents."""
        try:
            items = parse_bulk(body.decode("utf-8", "replace"), default_index)
        except EsError:
            with self.store.lock:
                self.bulk_log.append((0, len(body)))
            raise
        with self.store.lock:
            self.bulk_log.append((len(items), len(body)))
            for item in items:
                self.store.attempt(item)
        return items

    async def _bulk(self, request: web.Request) -> web.Response:
        _check_params(
            request,
            frozenset(
                {"refresh", "timeout", "wait_for_active_shards", "routing", "pipeline", "require_alias"}
            ),
        )
        refresh = _refresh_param(request)
        started = time.monotonic()
        items = self._receive_bulk(await request.read(), request.match_info.get("index"))
        for item in items:
            if "pipeline" in request.query:
                item.meta.setdefault("pipeline", request.query["pipeline"])
            if "require_alias" in request.query:
                item.meta.setdefault("require_alias", request.query["require_alias"] in ("", "true"))
        results = [self._run_item(item) for item in items]
        if refresh:
            self._refresh_after(results)
        return _json(
            request,
            {
                "took": int((time.monotonic() - started) * 1000),
                "errors": any("error" in result for result in results),
                "items": [{item.action: result} for item, result in zip(items, results, strict=True)],
            },
        )

    def _run_item(self, item: BulkItem) -> dict[str, Any]:
        error = self.faults.item_error(item)
        return failed_item(item, error) if error else self.store.apply(item)

    def _refresh_after(self, results: list[dict[str, Any]]) -> None:
        written = {result["_index"] for result in results if "error" not in result}
        if written:
            self.store.refresh(",".join(sorted(written)))
        for result in results:
            if "error" not in result:
                result["forced_refresh"] = True

    # -- documents, count, refresh -------------------------------------------------------------

    async def _count(self, request: web.Request) -> web.Response:
        _check_params(request)
        body = await request.read()
        try:
            query = json.loads(body) if body.strip() else {}
        except json.JSONDecodeError as exc:
            raise EsError(400, "parsing_exception", f"[{exc.lineno}:{exc.colno}] {exc.msg}") from None
        if query not in ({}, {"query": {"match_all": {}}}):
            raise bad_request("only match_all counts are implemented by this fake Elasticsearch")
        count, shards = self.store.count(request.match_info.get("index", "_all"))
        return _json(
            request,
            {
                "count": count,
                "_shards": {"total": shards, "successful": shards, "skipped": 0, "failed": 0},
            },
        )

    async def _refresh(self, request: web.Request) -> web.Response:
        _check_params(request)
        shards = self.store.refresh(request.match_info.get("index"))
        return _json(request, {"_shards": {**SHARDS, "total": shards, "successful": shards}})

    async def _get_doc(self, request: web.Request) -> web.Response:
        _check_params(request)
        status, body = self.store.get(request.match_info["index"], request.match_info["id"])
        return _json(request, body, status)
