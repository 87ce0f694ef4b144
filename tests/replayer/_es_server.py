"""`FakeElasticsearch`: an Elasticsearch 8.x-compatible HTTP server for the replayer's tests.

No Elasticsearch runs on the test machines, so the replayer talks to this over real HTTP on
127.0.0.1. It runs aiohttp in a background thread with its own event loop, so tests on any event
loop and worker subprocesses can share it:

    with FakeElasticsearch() as es:
        es.url                      # "http://127.0.0.1:<port>"
        es.fail_items(429, times=2) # faults and inspection are callable from the test thread
        es.doc("idx", "1"), es.count("idx-*"), es.attempts("idx", "1")

    python -m tests.replayer._es_server --port 9200   # serve until Ctrl-C, to try things by hand

Faithful to ES 8.x as documented (response bodies, statuses, error types and reasons):
- `GET|HEAD /`, `GET /_cluster/health` (always green: one node, one primary shard, no replica).
- `POST|PUT /_bulk` and `/{index}/_bulk`: NDJSON with ES's whole-request errors (trailing newline,
  malformed action lines, unknown metadata, validation) and per-item results; `index`, `create`,
  `delete`, and `update` with `doc` / `upsert` / `doc_as_upsert` / `detect_noop`; `op_type`,
  `if_seq_no`/`if_primary_term`, `version_type` external/external_gte; auto-generated 20-char ids;
  index auto-creation and name validation; `?refresh=true|wait_for`.
- Dynamic mapping: a field's first value fixes its type (long, float, boolean, date for
  ISO-8601 strings, text, object); a later value that ES would not coerce fails the item with
  `document_parsing_exception`.
- `GET /{index}/_doc/{id}` (realtime) and `HEAD`; `GET|POST /_count`, `/{index}/_count`
  (comma lists, wildcards, near-real-time: counts only what the last refresh made visible);
  `/_refresh`, `/{index}/_refresh`, and a refresh every `refresh_interval_s`; `GET /_cat/indices`.
- Unknown routes (400 "no handler found"), wrong methods (405), unsupported Content-Type (406),
  unrecognized query parameters (400), all as ES words them; `X-elastic-product` on every answer.

Deliberately not implemented: search and queries (count is match_all only), the index, mapping,
settings, alias, template and single-document write/delete APIs, scripted updates (a per-item
400), ingest pipelines (any pipeline but `_none` "does not exist", as on a cluster without any),
`filter_path` and other ES parameters (refused with 400, never silently ignored), routing (one
shard), mapping limits (total fields, depth), search-idle shards (a count never waits for a
refresh), the expiry of delete tombstones (`index.gc_deletes`: versions continue forever),
`wait_for` (refreshes at once), security (any credentials are accepted), and non-JSON bodies.

Faults: `fail_requests` applies to `_bulk` requests unless given another `path` pattern;
`fail_items`/`reject_mapping` apply to bulk items only. `slow()` processes a request at once and
holds its answer back (a client that times out has had its writes applied, as with a slow ES);
`hang()` holds requests before processing (a client that gives up has had nothing applied).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from tests.replayer._es_store import (
    SHARDS,
    BulkItem,
    EsError,
    Store,
    bad_request,
    failed_item,
    field_paths,
    mapping_rejection,
    parse_bulk,
)

__all__ = ["FakeElasticsearch"]

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

VERSION = "8.15.0"
# Control calls wait this long for the server's loop; far longer than any handler step takes.
_CONTROL_TIMEOUT_S = 10.0
_INDEX = "{index:_all|[^_/][^/]*}"  # ES index names never start with "_"
_GLOBAL_PARAMS = frozenset({"pretty", "human", "error_trace"})
# Real ES parameters this fake does not honour: refused rather than silently ignored.
_UNIMPLEMENTED_PARAMS = frozenset(
    {"filter_path", "q", "ignore_unavailable", "allow_no_indices", "expand_wildcards", "_source",
     "_source_includes", "_source_excludes", "require_data_stream", "list_executed_pipelines"}
)
# Every wait_for_* condition holds at once on this one-node, always-green cluster.
_HEALTH_PARAMS = frozenset(
    {"wait_for_status", "timeout", "master_timeout", "level", "local", "wait_for_nodes", "wait_for_events",
     "wait_for_active_shards", "wait_for_no_relocating_shards", "wait_for_no_initializing_shards"}
)
_BODY_TYPES = frozenset({"application/json", "application/x-ndjson", "application/vnd.elasticsearch+json",
                         "application/vnd.elasticsearch+x-ndjson"})


def _request_error(status: int, n_bytes: int) -> EsError:
    """What ES answers a whole request with, for an injected status."""
    if status == 429:
        return EsError(429, "es_rejected_execution_exception",
                       "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
                       f"replica_bytes=0, all_bytes=0, coordinating_operation_bytes={n_bytes}, "
                       "max_coordinating_and_primary_bytes=107374182]")
    if status == 503:
        return EsError(503, "cluster_block_exception",
                       "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];")
    return EsError(status, "exception", f"injected failure with status [{status}]")


def _item_error(status: int, item: BulkItem) -> EsError:
    """What ES puts in a bulk item that failed with an injected status."""
    shard = f"[{item.index}][0]"
    if status == 429:
        return EsError(429, "es_rejected_execution_exception",
                       f"rejected execution of primary operation [shard_detail={shard}, "
                       f"shard_operation_bytes={len(item.raw or '')}, "
                       "max_coordinating_and_primary_bytes=107374182]")
    if status == 503:
        return EsError(503, "unavailable_shards_exception",
                       f"{shard} primary shard is not active Timeout: [1m], request: [BulkShardRequest "
                       f"[{shard}] containing [1] requests]", index_uuid="_na_", shard="0", index=item.index)
    return EsError(status, "exception", f"injected item failure with status [{status}]")


@dataclass
class _Countdown:
    status: int
    times: int
    pattern: str = "*"
    match: Callable[[str, str], bool] | None = None


class _Faults:
    """Injected faults, set from the test thread and consumed by the server's loop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self.requests: list[_Countdown] = []
        self.items: list[_Countdown] = []
        self.rejections: list[tuple[str, str]] = []
        self.delay_s = 0.0

    def request_error(self, path: str, n_bytes: int) -> EsError | None:
        with self.lock:
            fault = _take(self.requests, lambda f: fnmatch.fnmatchcase(path, f.pattern))
        return _request_error(fault.status, n_bytes) if fault else None

    def item_error(self, item: BulkItem) -> EsError | None:
        index, doc_id = item.index or "", item.id or ""
        with self.lock:
            fault = _take(self.items, lambda f: f.match is None or f.match(index, doc_id))
            rejections = list(self.rejections)
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


class FakeElasticsearch:
    """An ES 8.x look-alike on 127.0.0.1, served from a background thread; see the module docstring."""

    def __init__(
        self, port: int = 0, *, host: str = "127.0.0.1", refresh_interval_s: float | None = 1.0
    ) -> None:
        self.host, self._port = host, port
        self.refresh_interval_s = refresh_interval_s  # None: only explicit refreshes (ES's -1)
        self.store = Store()
        self._faults = _Faults()
        self._bulk_log: list[tuple[int, int]] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def __enter__(self) -> FakeElasticsearch:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> FakeElasticsearch:
        """Serve from a new thread; returns once the port accepts connections."""
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(),), name="fake-elasticsearch", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Cut every connection, stop the loop and join its thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()
        self._thread = self._loop = None

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping, self._unhung = asyncio.Event(), asyncio.Event()
        self._unhung.set()
        self._runner = web.AppRunner(self._app(), handle_signals=False, handler_cancellation=True,
                                     access_log=None, shutdown_timeout=1.0)
        try:
            await self._runner.setup()
            await self._bind()
        except BaseException as exc:
            self._startup_error = exc
        finally:
            self._ready.set()
        if self._startup_error is None:
            async with asyncio.TaskGroup() as tg:
                refresher = tg.create_task(self._refresh_periodically())
                await self._stopping.wait()
                refresher.cancel()
            await self._unbind()
        await self._runner.cleanup()

    async def _refresh_periodically(self) -> None:
        if not self.refresh_interval_s or self.refresh_interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            self.store.refresh()

    async def _bind(self) -> None:
        assert self._runner is not None
        if self._site is None:
            site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
            await site.start()
            self._site = site
            self._port = self._runner.addresses[0][1]
        self._unhung.set()

    async def _unbind(self) -> None:
        assert self._runner is not None and self._runner.server is not None
        if self._site is not None:
            await self._site.stop()
            self._site = None
        for connection in self._runner.server.connections:
            if connection.transport is not None:
                connection.transport.abort()

    def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "FakeElasticsearch is not started"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_CONTROL_TIMEOUT_S)

    # -- control (thread-safe) ---------------------------------------------------------------

    def down(self) -> None:
        """Stop listening and reset every open connection: the port refuses connections."""
        self._on_loop(self._unbind())

    def up(self) -> None:
        """Listen again on the same port (and end `hang()`)."""
        self._on_loop(self._bind())

    def fail_requests(self, status: int = 429, times: int = 1, *, path: str = "*/_bulk") -> None:
        """The next `times` requests whose path matches the glob `path` are answered with `status`
        (429 es_rejected_execution_exception, 503 cluster_block_exception, else `exception`)."""
        with self._faults.lock:
            self._faults.requests.append(_Countdown(status, times, pattern=path))

    def fail_items(self, status: int = 429, times: int = 1,
                   match: Callable[[str, str], bool] | None = None) -> None:
        """The next `times` bulk items (for which `match(index, id)` holds, if given) fail with
        `status` and are not applied (429 es_rejected_execution_exception, 503
        unavailable_shards_exception, else `exception`); the rest of their request succeeds."""
        with self._faults.lock:
            self._faults.items.append(_Countdown(status, times, match=match))

    def reject_mapping(self, field: str, index_pattern: str = "*") -> None:
        """Until `clear_faults()`, bulk items whose source has the (dotted) field `field` fail with
        400 document_parsing_exception."""
        with self._faults.lock:
            self._faults.rejections.append((field, index_pattern))

    def slow(self, delay_s: float) -> None:
        """Hold every answer back `delay_s` seconds (0 clears)."""
        with self._faults.lock:
            self._faults.delay_s = delay_s

    def hang(self) -> None:
        """Accept requests but never answer them, until `up()` or `clear_faults()`."""
        self._on_loop(self._set_hanging(True))

    def clear_faults(self) -> None:
        """Drop every injected fault; hung requests proceed."""
        with self._faults.lock:
            self._faults.clear()
        self._on_loop(self._set_hanging(False))

    async def _set_hanging(self, hanging: bool) -> None:
        if hanging:
            self._unhung.clear()
        else:
            self._unhung.set()

    def refresh(self) -> None:
        """Make every write so far visible to `_count`, as `POST /_refresh` does."""
        self.store.refresh()

    # -- inspection (thread-safe) ------------------------------------------------------------

    def doc(self, index: str, doc_id: str) -> dict[str, Any] | None:
        """The stored source (realtime, refresh or not), or None."""
        stored = self.store.stored_doc(index, doc_id)
        return json.loads(json.dumps(stored.source)) if stored else None

    def version(self, index: str, doc_id: str) -> int | None:
        stored = self.store.stored_doc(index, doc_id)
        return stored.version if stored else None

    def count(self, pattern: str = "*") -> int:
        """Documents stored in the indices matching the glob, regardless of refresh."""
        return self.store.stored(pattern)

    def indices(self) -> list[str]:
        with self.store.lock:
            return sorted(self.store.indices)

    @property
    def bulk_requests(self) -> list[tuple[int, int]]:
        """(items, body bytes) of every `_bulk` request received: injected failures included,
        refused (malformed) ones as 0 items."""
        with self.store.lock:
            return list(self._bulk_log)

    def attempts(self, index: str, doc_id: str) -> int:
        """How many bulk items targeted this document, failed ones included."""
        with self.store.lock:
            return self.store.attempts[(index, doc_id)]

    # -- HTTP --------------------------------------------------------------------------------

    def _app(self) -> web.Application:
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

    def _json(self, request: web.Request, body: Any, status: int = 200) -> web.Response:
        content_type = "application/json"
        if "application/vnd.elasticsearch+json" in request.headers.get("Accept", ""):
            content_type = "application/vnd.elasticsearch+json;compatible-with=8"
        return web.Response(status=status, body=json.dumps(body, separators=(",", ":")).encode(),
                            headers={"Content-Type": content_type, "X-elastic-product": "Elasticsearch"})

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """ES's error bodies for `EsError`, unknown routes and wrong methods."""
        try:
            return await handler(request)
        except EsError as exc:
            return self._json(request, exc.envelope(), exc.status)
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            reason = (f"Incorrect HTTP method for uri [{request.path_qs}] and method [{request.method}], "
                      f"allowed: [{allowed}]")
            return self._json(request, {"error": reason, "status": 405}, 405)
        except web.HTTPNotFound:
            reason = f"no handler found for uri [{request.path_qs}] and method [{request.method}]"
            return self._json(request, {"error": reason}, 400)

    @web.middleware
    async def _faulty(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Hang, Content-Type check, injected request failures, then the handler, then the delay."""
        await self._unhung.wait()
        content_type = request.headers.get("Content-Type", "")
        if request.body_exists and content_type.split(";")[0].strip().lower() not in _BODY_TYPES:
            reason = f"Content-Type header [{content_type}] is not supported"
            return self._json(request, {"error": reason, "status": 406}, 406)
        body = await request.read()
        error = self._faults.request_error(request.path, len(body))
        response: web.StreamResponse
        if error is not None:
            if request.path.endswith("/_bulk"):
                with contextlib.suppress(EsError):
                    self._receive_bulk(body, request.match_info.get("index"))
            response = self._json(request, error.envelope(), error.status)
        else:
            response = await handler(request)
        if self._faults.delay_s > 0:
            await asyncio.sleep(self._faults.delay_s)
        return response

    async def _root(self, request: web.Request) -> web.Response:
        _check_params(request)
        return self._json(request, {
            "name": "fake-es-node", "cluster_name": "elasticsearch", "cluster_uuid": "fAkEeLaStIcSeArCh0000w",
            "version": {"number": VERSION, "build_flavor": "default", "build_type": "docker",
                        "build_hash": "0" * 40, "build_date": "2024-08-05T10:05:34.233336849Z",
                        "build_snapshot": False, "lucene_version": "9.11.1",
                        "minimum_wire_compatibility_version": "7.17.0",
                        "minimum_index_compatibility_version": "7.0.0"},
            "tagline": "You Know, for Search",
        })

    async def _health(self, request: web.Request) -> web.Response:
        _check_params(request, _HEALTH_PARAMS)
        shards = len(self.indices())
        return self._json(request, {
            "cluster_name": "elasticsearch", "status": "green", "timed_out": False, "number_of_nodes": 1,
            "number_of_data_nodes": 1, "active_primary_shards": shards, "active_shards": shards,
            "relocating_shards": 0, "initializing_shards": 0, "unassigned_shards": 0,
            "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0, "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0, "active_shards_percent_as_number": 100.0,
        })

    def _receive_bulk(self, body: bytes, default_index: str | None) -> list[BulkItem]:
        """Parse a bulk body, logging the request and an attempt at each of its documents."""
        try:
            items = parse_bulk(body.decode("utf-8", "replace"), default_index)
        except EsError:
            with self.store.lock:
                self._bulk_log.append((0, len(body)))
            raise
        with self.store.lock:
            self._bulk_log.append((len(items), len(body)))
            for item in items:
                self.store.attempt(item)
        return items

    async def _bulk(self, request: web.Request) -> web.Response:
        _check_params(request, frozenset({"refresh", "timeout", "wait_for_active_shards", "routing",
                                          "pipeline", "require_alias"}))
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
        return self._json(request, {
            "took": int((time.monotonic() - started) * 1000),
            "errors": any("error" in result for result in results),
            "items": [{item.action: result} for item, result in zip(items, results, strict=True)],
        })

    def _run_item(self, item: BulkItem) -> dict[str, Any]:
        error = self._faults.item_error(item)
        return failed_item(item, error) if error else self.store.apply(item)

    def _refresh_after(self, results: list[dict[str, Any]]) -> None:
        written = {result["_index"] for result in results if "error" not in result}
        if written:
            self.store.refresh(",".join(sorted(written)))
        for result in results:
            if "error" not in result:
                result["forced_refresh"] = True

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
        return self._json(request, {
            "count": count, "_shards": {"total": shards, "successful": shards, "skipped": 0, "failed": 0},
        })

    async def _refresh(self, request: web.Request) -> web.Response:
        _check_params(request)
        shards = self.store.refresh(request.match_info.get("index"))
        return self._json(request, {"_shards": {**SHARDS, "total": shards, "successful": shards}})

    async def _get_doc(self, request: web.Request) -> web.Response:
        _check_params(request)
        status, body = self.store.get(request.match_info["index"], request.match_info["id"])
        return self._json(request, body, status)

    async def _cat_indices(self, request: web.Request) -> web.Response:
        _check_params(request, frozenset({"format"}))
        rows = self.store.cat()
        if request.query.get("format") == "json":
            return self._json(request, rows)
        text = "".join(" ".join(row.values()) + "\n" for row in rows)
        return web.Response(text=text, headers={"X-elastic-product": "Elasticsearch"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Elasticsearch 8 until Ctrl-C.")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--refresh-interval", type=float, default=1.0, help="seconds; 0 disables")
    args = parser.parse_args(argv)
    with FakeElasticsearch(args.port, host=args.host, refresh_interval_s=args.refresh_interval) as es:
        print(f"fake Elasticsearch {VERSION} listening on {es.url} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
