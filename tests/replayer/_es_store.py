"""The document store behind `FakeElasticsearch`: indices (auto-created, names validated as ES does),
documents with versions and sequence numbers, bulk items applied one by one, and near-real-time
visibility (`count` sees only what the last refresh made searchable).

Thread-safe: every public `Store` method holds one lock, so the server's event loop thread writes
while a test thread inspects. Nothing here knows about HTTP or injected faults.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.replayer._es_bulk import BulkItem, failed_item, new_id
from tests.replayer._es_errors import EsError, bad_request, index_not_found
from tests.replayer._es_mapping import check_mapping, parse_source

PRIMARY_TERM = 1
# One primary shard and no replica per index: a single node then reports health green.
SHARDS = {"total": 1, "successful": 1, "failed": 0}
_INVALID_NAME_CHARS = '\\/*?"<>| ,'


def check_index_name(name: str) -> None:
    """Raise ES's `invalid_index_name_exception` for a name ES would refuse to create."""
    problem = _index_name_problem(name)
    if problem:
        raise EsError(
            400,
            "invalid_index_name_exception",
            f"Invalid index name [{name}], {problem}",
            index_uuid="_na_",
            index=name,
        )


def _index_name_problem(name: str) -> str | None:
    if any(c in name for c in _INVALID_NAME_CHARS):
        return f"must not contain the following characters [{', '.join(sorted(_INVALID_NAME_CHARS))}]"
    if "#" in name or ":" in name:
        return f"must not contain '{'#' if '#' in name else ':'}'"
    if not name or name[0] in "_-+":
        return "must not start with '_', '-', or '+'"
    if len(name.encode()) > 255:
        return f"index name is too long, ({len(name.encode())} > 255)"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    return None if name == name.lower() else "must be lowercase"


@dataclass
class Doc:
    source: dict[str, Any]
    version: int
    seq_no: int


@dataclass
class Index:
    name: str
    uuid: str = field(default_factory=lambda: uuid.uuid4().hex[:22])
    docs: dict[str, Doc] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)  # id -> version at deletion
    mapping: dict[str, str] = field(default_factory=dict)
    visible: int = 0  # documents the last refresh made searchable
    max_seq_no: int = -1

    def next_seq_no(self) -> int:
        self.max_seq_no += 1
        return self.max_seq_no

    def prior_version(self, doc_id: str) -> int:
        current = self.docs.get(doc_id)
        return current.version if current else self.tombstones.get(doc_id, 0)

    def conflict(self, doc_id: str, reason: str) -> EsError:
        return EsError(
            409,
            "version_conflict_engine_exception",
            f"[{doc_id}]: version conflict, {reason}",
            index_uuid=self.uuid,
            shard="0",
            index=self.name,
        )

    def check_mapping(self, doc_id: str, raw: str, source: dict[str, Any]) -> None:
        check_mapping(self.mapping, doc_id, raw, source)


def resolve(indices: dict[str, Index], expression: str, resource_type: str = "index_or_alias") -> list[Index]:
    """The indices an expression (comma list, wildcards, `_all`) names; a missing concrete one is a 404."""
    found: dict[str, Index] = {}
    for part in expression.split(","):
        if part in ("_all", "*") or "*" in part or "?" in part:
            pattern = "*" if part == "_all" else part
            found.update(
                (n, i)
                for n, i in indices.items()
                if fnmatch.fnmatchcase(n, pattern) and (pattern.startswith(".") or n[0] != ".")
            )
        elif part in indices:
            found[part] = indices[part]
        else:
            raise index_not_found(part, resource_type)
    return list(found.values())


class Store:
    """All indices of the fake cluster, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.indices: dict[str, Index] = {}
        self.attempts: Counter[tuple[str, str]] = Counter()

    def index_for_write(self, name: str) -> Index:
        check_index_name(name)
        if name not in self.indices:
            self.indices[name] = Index(name)
        return self.indices[name]

    def refresh(self, expression: str | None = None) -> int:
        """Make the writes so far searchable (all indices when no expression); returns shards refreshed."""
        with self.lock:
            targets = resolve(self.indices, expression) if expression else list(self.indices.values())
            for index in targets:
                index.visible = len(index.docs)
            return len(targets)

    def count(self, expression: str) -> tuple[int, int]:
        """(searchable documents, shards) of the indices the expression names."""
        with self.lock:
            targets = resolve(self.indices, expression)
            return sum(index.visible for index in targets), len(targets)

    def get(self, name: str, doc_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            index = self.indices.get(name)
            if index is None:
                raise index_not_found(name, "index_expression")
            doc = index.docs.get(doc_id)
            if doc is None:
                return 404, {"_index": name, "_id": doc_id, "found": False}
            return 200, {
                "_index": name,
                "_id": doc_id,
                "_version": doc.version,
                "_seq_no": doc.seq_no,
                "_primary_term": PRIMARY_TERM,
                "found": True,
                "_source": doc.source,
            }

    def stored(self, pattern: str = "*") -> int:
        with self.lock:
            return sum(len(i.docs) for n, i in self.indices.items() if fnmatch.fnmatchcase(n, pattern))

    def stored_doc(self, name: str, doc_id: str) -> Doc | None:
        with self.lock:
            index = self.indices.get(name)
            return index.docs.get(doc_id) if index else None

    def cat(self) -> list[dict[str, str]]:
        """Rows of `_cat/indices`, every value a string as ES gives them."""
        with self.lock:
            return [_cat_row(index) for _, index in sorted(self.indices.items())]

    # -- writes ----------------------------------------------------------------------------------

    def attempt(self, item: BulkItem) -> None:
        """Count an attempt at the item's document, giving it an auto-generated id if it has none."""
        with self.lock:
            if item.id is None:
                item.id = new_id()
            self.attempts[(item.index or "", item.id)] += 1

    def apply(self, item: BulkItem) -> dict[str, Any]:
        """Execute one bulk item; returns its entry of the bulk response (a result or an `error`)."""
        with self.lock:
            try:
                return self._apply(item)
            except EsError as exc:
                return failed_item(item, exc)

    def _apply(self, item: BulkItem) -> dict[str, Any]:
        assert item.index is not None and item.id is not None and (item.raw or item.action == "delete")
        pipeline = item.meta.get("pipeline", "_none")
        if pipeline != "_none":
            raise bad_request(f"pipeline with id [{pipeline}] does not exist")
        if item.meta.get("require_alias") is True:  # this cluster has no aliases
            raise index_not_found(item.index)
        if item.action == "delete":
            return self._delete(item)
        index = self.index_for_write(item.index)
        if item.action == "update":
            return self._update(index, item)
        return self._write(index, item, parse_source(item.raw or ""))

    def _write(self, index: Index, item: BulkItem, source: dict[str, Any]) -> dict[str, Any]:
        doc_id = item.id or ""
        index.check_mapping(doc_id, item.raw or "", source)  # ES parses before the engine sees versions
        current = index.docs.get(doc_id)
        if item.action == "create" and current:
            raise index.conflict(doc_id, f"document already exists (current version [{current.version}])")
        version = self._next_version(index, item, current)
        seq_no = index.next_seq_no()
        index.docs[doc_id] = Doc(source, version, seq_no)
        index.tombstones.pop(doc_id, None)
        return _result(index, doc_id, version, seq_no, "updated" if current else "created")

    def _delete(self, item: BulkItem) -> dict[str, Any]:
        doc_id = item.id or ""
        index = self.indices.get(item.index or "")
        if index is None:
            raise index_not_found(item.index or "")
        current = index.docs.get(doc_id)
        version = self._next_version(index, item, current)
        index.docs.pop(doc_id, None)
        index.tombstones[doc_id] = version
        return _result(index, doc_id, version, index.next_seq_no(), "deleted" if current else "not_found")

    def _update(self, index: Index, item: BulkItem) -> dict[str, Any]:
        body = json.loads(item.raw or "")
        if "script" in body:
            raise bad_request("scripted updates are not implemented by this fake Elasticsearch")
        current = index.docs.get(item.id or "")
        if current is None:
            upsert = body.get("doc") if body.get("doc_as_upsert") else body.get("upsert")
            if upsert is None:
                raise EsError(
                    404,
                    "document_missing_exception",
                    f"[{item.id}]: document missing",
                    index_uuid=index.uuid,
                    shard="0",
                    index=index.name,
                )
            return self._write(index, item, upsert)
        merged = _merge(current.source, body.get("doc") or {})
        if merged == current.source and body.get("detect_noop", True):
            noop = _result(index, item.id or "", current.version, current.seq_no, "noop")
            return {**noop, "_shards": {"total": 0, "successful": 0, "failed": 0}}
        return self._write(index, item, merged)

    def _next_version(self, index: Index, item: BulkItem, current: Doc | None) -> int:
        """The version the write gets, after ES's optimistic concurrency and external version checks."""
        doc_id = item.id or ""
        if "if_seq_no" in item.meta:
            _check_seq_no(index, doc_id, item.meta, current)
        prior = index.prior_version(doc_id)
        version_type = item.meta.get("version_type", "internal")
        if version_type == "internal":
            return prior + 1
        wanted = int(item.meta.get("version", 0))
        gte = version_type == "external_gte"
        known = current is not None or doc_id in index.tombstones
        if known and (wanted < prior or (wanted == prior and not gte)):
            relation = "higher than" if gte else "higher or equal to"
            raise index.conflict(
                doc_id, f"current version [{prior}] is {relation} the one provided [{wanted}]"
            )
        return wanted


def _check_seq_no(index: Index, doc_id: str, meta: dict[str, Any], current: Doc | None) -> None:
    wanted = (meta["if_seq_no"], meta.get("if_primary_term", 0))
    required = f"required seqNo [{wanted[0]}], primary term [{wanted[1]}]."
    if current is None:
        raise index.conflict(doc_id, f"{required} but no document was found")
    if (current.seq_no, PRIMARY_TERM) != wanted:
        raise index.conflict(
            doc_id,
            f"{required} current document has seqNo [{current.seq_no}] and primary term [{PRIMARY_TERM}]",
        )


def _result(index: Index, doc_id: str, version: int, seq_no: int, result: str) -> dict[str, Any]:
    return {
        "_index": index.name,
        "_id": doc_id,
        "_version": version,
        "result": result,
        "_shards": dict(SHARDS),
        "_seq_no": seq_no,
        "_primary_term": PRIMARY_TERM,
        "status": {"created": 201, "not_found": 404}.get(result, 200),
    }


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """ES's partial-document update: objects merge recursively, anything else is replaced."""
    merged = dict(base)
    for key, value in patch.items():
        old = merged.get(key)
        merged[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


def _cat_row(index: Index) -> dict[str, str]:
    size = f"{sum(len(json.dumps(d.source)) for d in index.docs.values())}b"
    return {
        "health": "green",
        "status": "open",
        "index": index.name,
        "uuid": index.uuid,
        "pri": "1",
        "rep": "0",
        "docs.count": str(index.visible),
        "docs.deleted": "0",
        "store.size": size,
        "pri.store.size": size,
        "dataset.size": size,
    }
