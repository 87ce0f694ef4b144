"""The index role's BatchHandler: `captains_log` entries -> `_bulk` -> one outcome per entry.

Per item: accepted -> Done (and an `indexed` result); 400 -> DeadLetter with Elasticsearch's
reason (and a `failed` result); 429 / 503 -> uncounted Retry (Elasticsearch is busy, not the
document's fault); anything else -> counted Retry, dead-lettered after max deliveries. When
Elasticsearch does not answer at all, nothing is acked: every entry is retried with backoff.

Results go to `captains_log_results` *before* the entries are acked, so the scanning process's
ledger learns of every accepted or refused document at least once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from schemas import CaptainsLogDoc, CaptainsLogResult, SchemaError, contract_for
from streams import DONE, DeadLetter, Entry, Outcome, Producer, Retry, StreamNames
from workers.replayer.es import ElasticClient, EsRejected, EsUnavailable, ItemResult, Verdict, chunks

log = logging.getLogger("streamfill.replayer")
# What the index role reads (documents) and writes (their results).
_DOCS = contract_for(StreamNames.CAPTAINS_LOG)
_RESULTS = contract_for(StreamNames.CAPTAINS_LOG_RESULTS)

# Dead-letter reasons an operator filters on.
REASON_INVALID = "invalid_entry"
REASON_REJECTED = "rejected_by_elasticsearch"


@dataclass(frozen=True)
class IndexStats:
    """A snapshot of one index handler."""

    bulk_requests: int
    indexed: int
    rejected: int
    retried: int
    unavailable_since: float | None
    last_error: str


class IndexHandler:
    """Indexes batches of documents; see the module docstring for the outcome of each item."""

    def __init__(
        self,
        es: ElasticClient,
        results: Producer,
        *,
        max_docs: int,
        max_bytes: int,
        max_deliveries: int,
    ) -> None:
        self._es = es
        self._results = results
        self._max_docs = max_docs
        self._max_bytes = max_bytes
        self._max_deliveries = max_deliveries
        self._counts = {"bulk": 0, "indexed": 0, "rejected": 0, "retried": 0}
        self._unavailable_since: float | None = None
        self._last_error = ""

    def retune(self, *, max_docs: int, max_bytes: int) -> None:
        """New bulk request limits (a live override), from the next batch on."""
        self._max_docs, self._max_bytes = max_docs, max_bytes

    def statistics(self) -> IndexStats:
        c = self._counts
        return IndexStats(
            c["bulk"], c["indexed"], c["rejected"], c["retried"], self._unavailable_since, self._last_error
        )

    async def __call__(self, entries: Sequence[Entry]) -> Sequence[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(entries)
        docs = self._decode(entries, outcomes)
        results: list[CaptainsLogResult] = []
        try:
            for chunk in chunks([d for _, d in docs], self._max_docs, self._max_bytes):
                batch = [docs[k] for k in chunk]
                items = await self._bulk([d for _, d in batch])
                for (i, doc), item in zip(batch, items, strict=True):
                    outcomes[i] = self._judge(entries[i], doc, item, results)
        except EsUnavailable as exc:
            self._unavailable(exc)
            retry = Retry(error=str(exc), counted=False)
            outcomes = [retry if o is None else o for o in outcomes]
        else:
            self._available()
        if results:
            await self._results.send([_RESULTS.encode(r) for r in results])
        return [DONE if o is None else o for o in outcomes]

    def _decode(
        self, entries: Sequence[Entry], outcomes: list[Outcome | None]
    ) -> list[tuple[int, CaptainsLogDoc]]:
        docs = []
        for i, entry in enumerate(entries):
            try:
                docs.append((i, _DOCS.decode(entry.fields)))
            except SchemaError as exc:
                log.warning("dead-lettering entry", extra={"reason": REASON_INVALID, "error": str(exc)})
                outcomes[i] = DeadLetter(reason=REASON_INVALID, error=str(exc))
        return docs

    async def _bulk(self, docs: list[CaptainsLogDoc]) -> list[ItemResult]:
        """One bulk request; a request too large for Elasticsearch is halved, down to one doc."""
        try:
            self._counts["bulk"] += 1
            return await self._es.bulk(docs)
        except EsRejected as exc:
            # Too large, or unparseable because of one document: halve to find the culprit.
            if exc.status in (400, 413) and len(docs) > 1:
                mid = len(docs) // 2
                return [*await self._bulk(docs[:mid]), *await self._bulk(docs[mid:])]
            # The whole request refused: every document of it gets that status (400 -> rejected).
            return [ItemResult(exc.status, error=str(exc)) for _ in docs]

    def _judge(
        self, entry: Entry, doc: CaptainsLogDoc, item: ItemResult, results: list[CaptainsLogResult]
    ) -> Outcome:
        verdict = item.verdict
        if verdict is Verdict.INDEXED:
            self._counts["indexed"] += 1
            results.append(_result(doc, "indexed", version=item.version))
            return DONE
        self._last_error = item.error
        if verdict is Verdict.BUSY:
            self._counts["retried"] += 1
            return Retry(error=item.error, counted=False)
        if verdict is Verdict.RETRY and entry.deliveries < self._max_deliveries:
            self._counts["retried"] += 1
            return Retry(error=f"HTTP {item.status}: {item.error}")
        # Rejected, or retried max_deliveries times: dead-letter it, and tell the ledger why.
        self._counts["rejected"] += 1
        reason = (
            REASON_REJECTED if verdict is Verdict.REJECTED else f"max deliveries ({self._max_deliveries})"
        )
        error = f"HTTP {item.status}: {item.error}"
        log.warning(
            "document refused by elasticsearch",
            extra={
                "path": doc.path,
                "doc_id": doc.doc_id,
                "index": doc.index,
                "reason": reason,
                "error": error,
            },
        )
        results.append(_result(doc, "failed", error=error))
        return DeadLetter(reason=reason, error=error)

    def _unavailable(self, exc: EsUnavailable) -> None:
        self._last_error = str(exc)
        if self._unavailable_since is None:
            self._unavailable_since = time.monotonic()
            log.warning(
                "elasticsearch unreachable: nothing is acked, documents are retried with backoff",
                extra={"es_url": self._es.url, "error": str(exc)},
            )

    def _available(self) -> None:
        if self._unavailable_since is not None:
            down_s = time.monotonic() - self._unavailable_since
            self._unavailable_since = None
            log.info(
                "elasticsearch reachable again", extra={"es_url": self._es.url, "down_s": round(down_s, 1)}
            )


def _result(
    doc: CaptainsLogDoc, status: str, *, version: int | None = None, error: str = ""
) -> CaptainsLogResult:
    return CaptainsLogResult(
        kind=doc.kind,
        doc_id=doc.doc_id,
        index=doc.index,
        path=doc.path,
        run=doc.run,
        mtime_ns=doc.mtime_ns,
        size=doc.size,
        status=status,
        error=error,
        version=version,
    )
