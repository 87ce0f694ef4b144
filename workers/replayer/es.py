"""Elasticsearch over httpx: `_bulk` with explicit ids, and reading every item's status.

    EsError
     ├── EsUnavailable   no usable answer: refused, reset, timed out, or the whole request
     │                   answered 429 / 502 / 503 / 504 -> back off, do not ack, nothing lost
     └── EsRejected      the whole request was refused for another reason (4xx/5xx)
                         -> the batch is retried and, if it keeps failing, dead-lettered

A 200 bulk response can still hold failed items: `bulk` returns one ItemResult per document, and
the caller decides per item (see `judge`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import anyio
import httpx
import msgspec

from schemas import CaptainsLogDoc
from streams import Backoff

log = logging.getLogger("streamfill.replayer")
_WHOLE_REQUEST_TRANSIENT = frozenset({429, 502, 503, 504})
_NDJSON = {"Content-Type": "application/x-ndjson", "Accept": "application/json"}


class EsError(Exception):
    """Base of the Elasticsearch client's errors."""


class EsUnavailable(EsError):
    """Elasticsearch did not take the request; retrying later may succeed."""


class EsRejected(EsError):
    """Elasticsearch refused the whole request."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status


class Verdict(Enum):
    INDEXED = "indexed"
    REJECTED = "rejected"  # permanent: a mapping or parsing error (400), a document too large (413)
    BUSY = "busy"  # 429 / 503: Elasticsearch's trouble, not the document's (uncounted retry)
    RETRY = "retry"  # anything else: retried, counted towards max deliveries


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One bulk item as Elasticsearch answered it."""

    status: int
    version: int | None = None
    error: str = ""

    @property
    def verdict(self) -> Verdict:
        return judge(self.status)


def judge(status: int) -> Verdict:
    if status in (200, 201):
        return Verdict.INDEXED
    if status in (400, 413):  # 413: a single document larger than http.max_content_length
        return Verdict.REJECTED
    if status in (429, 503):
        return Verdict.BUSY
    return Verdict.RETRY


class ElasticClient:
    """The calls the replayer makes."""

    def __init__(self, http: httpx.AsyncClient, url: str, *, api_key: str = "") -> None:
        self._http = http
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"ApiKey {api_key}"} if api_key else {}

    async def health(self) -> dict[str, Any]:
        """`GET /_cluster/health`; EsUnavailable unless it answers with a status."""
        data = await self._json("GET", "/_cluster/health")
        if data.get("status") not in ("green", "yellow"):
            raise EsUnavailable(f"cluster health is {data.get('status')!r}")
        return data

    async def bulk(self, docs: Sequence[CaptainsLogDoc]) -> list[ItemResult]:
        """Index `docs` with their explicit ids in one `_bulk` request; one result per doc, in order."""
        data = await self._json("POST", "/_bulk", content=ndjson(docs), headers=_NDJSON)
        items = data.get("items")
        if not isinstance(items, list) or len(items) != len(docs):
            # Never taken as success: 502 makes every document a counted retry.
            got = len(items) if isinstance(items, list) else "no"
            raise EsRejected(502, f"bulk response has {got} items for {len(docs)} documents")
        return [_item(item) for item in items]

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = await self._http.request(method, self.url + path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise EsUnavailable(f"{type(exc).__name__}: {str(exc) or 'no answer'} ({self.url})") from exc
        if response.status_code in _WHOLE_REQUEST_TRANSIENT:
            raise EsUnavailable(f"HTTP {response.status_code}: {_reason(response)}")
        if response.status_code == 413:
            raise EsRejected(413, "request too large (http.max_content_length)")
        if response.status_code >= 300:
            raise EsRejected(response.status_code, _reason(response))
        try:
            data = response.json()
        except ValueError as exc:
            raise EsUnavailable(f"answer is not JSON (is {self.url} Elasticsearch?)") from exc
        if not isinstance(data, dict):
            raise EsRejected(502, "answer is not a JSON object")
        return data


async def wait_for_es(es: ElasticClient, *, timeout_s: float | None = None) -> bool:
    """Wait until Elasticsearch answers its health check (logging once while it does not)."""
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    attempt = 0
    with anyio.move_on_after(timeout_s):
        while True:
            try:
                await es.health()
                if attempt:
                    log.info("elasticsearch answers", extra={"es_url": es.url})
                return True
            except EsError as exc:
                if attempt == 0:
                    log.warning("waiting for elasticsearch", extra={"es_url": es.url, "error": str(exc)})
                attempt += 1
                await anyio.sleep(backoff.delay(attempt))
    return False


def ndjson(docs: Sequence[CaptainsLogDoc]) -> bytes:
    """The bulk body: an `index` action (create-or-replace by explicit id) and the source, per doc."""
    parts: list[bytes] = []
    for doc in docs:
        parts.append(msgspec.json.encode({"index": {"_index": doc.index, "_id": doc.doc_id}}))
        parts.append(bytes(doc.body))
    parts.append(b"")
    return b"\n".join(parts)


def chunks(docs: Sequence[CaptainsLogDoc], max_docs: int, max_bytes: int) -> list[list[int]]:
    """Positions of `docs` split into requests of at most max_docs and (but for one doc) max_bytes."""
    out: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, doc in enumerate(docs):
        item = len(doc.body) + len(doc.index) + len(doc.doc_id) + 40
        if current and (len(current) >= max_docs or size + item > max_bytes):
            out.append(current)
            current, size = [], 0
        current.append(i)
        size += item
    if current:
        out.append(current)
    return out


def _item(item: Any) -> ItemResult:
    if not isinstance(item, dict) or len(item) != 1:
        return ItemResult(500, error=f"malformed bulk item: {item!r}"[:500])
    body = next(iter(item.values()))
    if not isinstance(body, dict):
        return ItemResult(500, error=f"malformed bulk item: {item!r}"[:500])
    status = body.get("status")
    if not isinstance(status, int):
        return ItemResult(500, error=f"bulk item without a status: {item!r}"[:500])
    error = body.get("error")
    if error is None:
        return ItemResult(status, version=body.get("_version"))
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, dict):
            text += f" (caused by {cause.get('type')}: {cause.get('reason')})"
    else:
        text = str(error)
    return ItemResult(status, error=text)


def _reason(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}"
    return str(error or data)[:300]
