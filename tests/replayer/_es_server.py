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

This module runs the server (its thread, loop, port and the test-facing controls); the routes live
in `_es_http`, the documents in `_es_store`, and `_es_bulk`, `_es_mapping`, `_es_faults` and
`_es_errors` hold the bulk format, dynamic mapping, fault injection and ES's errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from tests.replayer._es_faults import Faults
from tests.replayer._es_http import VERSION, HttpApi
from tests.replayer._es_store import Store

__all__ = ["FakeElasticsearch"]

T = TypeVar("T")

# Control calls wait this long for the server's loop; far longer than any handler step takes.
_CONTROL_TIMEOUT_S = 10.0


class FakeElasticsearch:
    """An ES 8.x look-alike on 127.0.0.1, served from a background thread; see the module docstring."""

    def __init__(
        self, port: int = 0, *, host: str = "127.0.0.1", refresh_interval_s: float | None = 1.0
    ) -> None:
        self.host, self._port = host, port
        self.refresh_interval_s = refresh_interval_s  # None: only explicit refreshes (ES's -1)
        self.store = Store()
        self._faults = Faults()
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
        api = HttpApi(self.store, self._faults, self._bulk_log, self._unhung)
        self._runner = web.AppRunner(
            api.app(), handle_signals=False, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
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
        self._faults.fail_requests(status, times, path)

    def fail_items(
        self, status: int = 429, times: int = 1, match: Callable[[str, str], bool] | None = None
    ) -> None:
        """The next `times` bulk items (for which `match(index, id)` holds, if given) fail with
        `status` and are not applied (429 es_rejected_execution_exception, 503
        unavailable_shards_exception, else `exception`); the rest of their request succeeds."""
        self._faults.fail_items(status, times, match)

    def reject_mapping(self, field: str, index_pattern: str = "*") -> None:
        """Until `clear_faults()`, bulk items whose source has the (dotted) field `field` fail with
        400 document_parsing_exception."""
        self._faults.reject_mapping(field, index_pattern)

    def slow(self, delay_s: float) -> None:
        """Hold every answer back `delay_s` seconds (0 clears)."""
        self._faults.slow(delay_s)

    def hang(self) -> None:
        """Accept requests but never answer them, until `up()` or `clear_faults()`."""
        self._on_loop(self._set_hanging(True))

    def clear_faults(self) -> None:
        """Drop every injected fault; hung requests proceed."""
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
