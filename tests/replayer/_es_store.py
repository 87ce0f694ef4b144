"""The document store behind `FakeElasticsearch`: ES errors, the bulk NDJSON format, indices with
versions and sequence numbers, dynamic mapping, and near-real-time visibility.

Thread-safe: every public `Store` method holds one lock, so the server's event loop thread writes
while a test thread inspects. Nothing here knows about HTTP or injected faults.
"""

from __future__ import annotations

import fnmatch
import json
import re
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

PRIMARY_TERM = 1
# One primary shard and no replica per index: a single node then reports health green.
SHARDS = {"total": 1, "successful": 1, "failed": 0}
_INVALID_NAME_CHARS = "\\/*?\"<>| ,"
_ISO_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}([.,]\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?"
)
_META_KEYS = frozenset(
    "_index _id routing op_type version version_type if_seq_no if_primary_term retry_on_conflict "
    "pipeline _source require_alias require_data_stream dynamic_templates list_executed_pipelines".split()
)
_UPDATE_KEYS = frozenset("doc upsert doc_as_upsert script scripted_upsert detect_noop _source".split())
_ACTIONS = ("create", "delete", "index", "update")


class EsError(Exception):
    """An Elasticsearch exception: rendered as a bulk item's `error` or as a whole-request envelope."""

    def __init__(self, status: int, type_: str, reason: str, **meta: Any) -> None:
        super().__init__(reason)
        self.status, self.type, self.reason, self.meta = status, type_, reason, meta

    def body(self) -> dict[str, Any]:
        return {"type": self.type, "reason": self.reason, **self.meta}

    def envelope(self) -> dict[str, Any]:
        root = {k: v for k, v in self.body().items() if k != "caused_by"}
        return {"error": {"root_cause": [root], **self.body()}, "status": self.status}


def caused_by(type_: str, reason: str) -> dict[str, str]:
    return {"type": type_, "reason": reason}


def bad_request(reason: str) -> EsError:
    return EsError(400, "illegal_argument_exception", reason)


def index_not_found(name: str, resource_type: str = "index_or_alias") -> EsError:
    return EsError(
        404, "index_not_found_exception", f"no such index [{name}]",
        **{"resource.type": resource_type, "resource.id": name, "index_uuid": "_na_", "index": name},
    )


def check_index_name(name: str) -> None:
    """Raise ES's `invalid_index_name_exception` for a name ES would refuse to create."""
    problem = _index_name_problem(name)
    if problem:
        raise EsError(
            400, "invalid_index_name_exception", f"Invalid index name [{name}], {problem}",
            index_uuid="_na_", index=name,
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


# -- the bulk NDJSON format ------------------------------------------------------------------------


@dataclass
class BulkItem:
    """One action of a bulk request, with its source line (`raw`) still as sent."""

    action: str
    index: str | None
    id: str | None
    meta: dict[str, Any]
    raw: str | None = None
    line: int = 0


def parse_bulk(body: str, default_index: str | None) -> list[BulkItem]:
    """Parse a bulk body as ES does; malformed input fails the whole request with an `EsError`."""
    if body and not body.endswith("\n"):
        raise bad_request("The bulk request must be terminated by a newline [\\n]")
    lines = body.split("\n")[:-1]
    items: list[BulkItem] = []
    n = 0
    while n < len(lines):
        item = _parse_action(lines[n], n + 1, default_index)
        if item.action != "delete":
            if n + 1 >= len(lines):
                break  # ES drops a trailing action whose source line is missing
            n += 1
            item.raw = lines[n]
            if item.action == "update":
                _parse_update_body(item.raw, n + 1)
        items.append(item)
        n += 1
    _validate(items)
    return items


def _token(value: Any) -> str:
    if isinstance(value, dict):
        return "START_OBJECT"
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, str):
        return "VALUE_STRING"
    if isinstance(value, bool):
        return "VALUE_BOOLEAN"
    return "VALUE_NULL" if value is None else "VALUE_NUMBER"


def _parse_action(text: str, line: int, default_index: str | None) -> BulkItem:
    malformed = f"Malformed action/metadata line [{line}], expected"
    decoded = _loads(text, line) if text.strip() else None
    if not isinstance(decoded, dict):
        found = _token(decoded) if text.strip() else "null"
        raise bad_request(f"{malformed} START_OBJECT but found [{found}]")
    if not decoded:
        raise bad_request(f"{malformed} FIELD_NAME but found [END_OBJECT]")
    action, meta = next(iter(decoded.items()))
    if action not in _ACTIONS:
        raise bad_request(f"{malformed} one of [create, delete, index, update] but found [{action}]")
    if not isinstance(meta, dict):
        raise bad_request(f"{malformed} START_OBJECT but found [{_token(meta)}]")
    if len(decoded) > 1:
        raise bad_request(f"{malformed} END_OBJECT but found [FIELD_NAME]")
    for key in meta:
        if key not in _META_KEYS:
            raise bad_request(f"Action/metadata line [{line}] contains an unknown parameter [{key}]")
    if action == "index" and meta.get("op_type") == "create":
        action = "create"
    index, doc_id = meta.get("_index", default_index), meta.get("_id")
    return BulkItem(action, None if index is None else str(index), None if doc_id is None else str(doc_id),
                    meta, line=line)


def _loads(text: str, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EsError(400, "x_content_parse_exception", f"[{line}:{exc.colno}] {exc.msg}") from None


def _parse_update_body(text: str, line: int) -> None:
    body = _loads(text, line)
    if not isinstance(body, dict):
        raise EsError(400, "x_content_parse_exception", f"[{line}:1] [UpdateRequest] Expected START_OBJECT")
    for key, value in body.items():
        if key not in _UPDATE_KEYS:
            raise EsError(400, "x_content_parse_exception",
                          f"[{line}:2] [UpdateRequest] unknown field [{key}]")
        if key in ("doc", "upsert") and not isinstance(value, dict):
            raise EsError(400, "x_content_parse_exception",
                          f"[{line}:2] [UpdateRequest] {key} doesn't support values of type: {_token(value)}")


def _validate(items: list[BulkItem]) -> None:
    problems = [problem for item in items for problem in _problems(item)] if items else ["no requests added"]
    if problems:
        numbered = "".join(f"{n}: {p};" for n, p in enumerate(problems, 1))
        raise EsError(400, "action_request_validation_exception", f"Validation Failed: {numbered}")


def _problems(item: BulkItem) -> Iterator[str]:
    """ES's request validation of one item."""
    if item.index is None:
        yield "index is missing"
    if item.id is None and item.action in ("delete", "update"):
        yield "id is missing"
    if item.id == "":
        yield "if _id is specified it must not be empty"
    if item.id and len(item.id.encode()) > 512:
        yield f"id [{item.id}] is too long, must be no longer than 512 bytes but was: {len(item.id.encode())}"
    external = item.meta.get("version_type", "internal") != "internal"
    if item.action == "create" and external:
        yield "create operations only support internal versioning. use index instead"
    elif "version" in item.meta and not external:
        yield ("internal versioning can not be used for optimistic concurrency control. "
               "Please use `if_seq_no` and `if_primary_term` instead")


def new_id() -> str:
    """A 20-character URL-safe id, the length of ES's auto-generated ids."""
    return secrets.token_urlsafe(15)


# -- dynamic mapping -------------------------------------------------------------------------------


def _preview(value: Any) -> str:
    """A value as ES's error messages show it (Java's `toString` of the parsed JSON)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_preview(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_preview(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _location(raw: str, path: str) -> str:
    """`line:column` of the field's value in the source line, as ES reports it (best effort)."""
    found = re.search(r'"' + re.escape(path.rsplit(".", 1)[-1]) + r'"\s*:\s*', raw)
    return f"1:{found.end() + 1 if found else 1}"


def _is_date(value: str) -> bool:
    if not _ISO_DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value[:10])
    except ValueError:
        return False
    return True


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _infer(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dict):
        return "object"
    return "date" if _is_date(value) else "text"


def _coercion_problem(kind: str, value: Any) -> dict[str, str] | None:
    """Why `value` does not fit a field of type `kind` (ES's default coercion), or None."""
    if isinstance(value, dict):
        return caused_by("illegal_state_exception", "Can't get text on a START_OBJECT")
    if kind in ("long", "float") and not (
        (isinstance(value, int | float) and not isinstance(value, bool))
        or (isinstance(value, str) and _is_number(value))
    ):
        return caused_by("illegal_argument_exception", f'For input string: "{_preview(value)}"')
    if kind == "boolean" and value not in (True, False, "true", "false", ""):
        return caused_by(
            "illegal_argument_exception",
            f"Failed to parse value [{_preview(value)}] as only [true] or [false] are allowed.",
        )
    if kind == "date" and (isinstance(value, bool) or (isinstance(value, str) and not (
        _is_date(value) or re.fullmatch(r"\d{4}(-\d{2})?|-?\d+", value)
    ))):
        return caused_by(
            "illegal_argument_exception",
            f"failed to parse date field [{_preview(value)}] with format "
            "[strict_date_optional_time||epoch_millis]",
        )
    return None


@dataclass
class _Check:
    doc_id: str
    raw: str
    mapping: dict[str, str]
    new: dict[str, str] = field(default_factory=dict)

    def walk(self, obj: dict[str, Any], prefix: str = "") -> None:
        for key, value in obj.items():
            *parents, leaf = key.split(".")  # ES expands dotted names into objects
            path = prefix
            for part in parents:
                path = f"{path}.{part}" if path else part
                self.field(path, {})
            self.field(f"{path}.{leaf}" if path else leaf, value)

    def field(self, path: str, value: Any) -> None:
        if isinstance(value, list):
            for element in value:
                self.field(path, element)
            return
        if value is None:
            return
        kind = self.mapping.get(path) or self.new.get(path)
        if kind is None:
            kind = self.new[path] = _infer(value)
        elif kind == "object" and not isinstance(value, dict):
            raise self.error(path, f"object mapping for [{path}] tried to parse field [{path}] as object, "
                                   "but found a concrete value")
        elif kind != "object" and (problem := _coercion_problem(kind, value)):
            raise self.error(path, self.field_reason(path, kind, value), caused_by=problem)
        if kind == "object":
            self.walk(value, path)

    def field_reason(self, path: str, kind: str, value: Any) -> str:
        return (f"failed to parse field [{path}] of type [{kind}] in document with id '{self.doc_id}'. "
                f"Preview of field's value: '{_preview(value)}'")

    def error(self, path: str, reason: str, **meta: Any) -> EsError:
        return EsError(400, "document_parsing_exception", f"[{_location(self.raw, path)}] {reason}", **meta)


def field_paths(obj: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every field path in a source, dotted names expanded as ES does."""
    for key, value in obj.items():
        path = f"{prefix}.{key}" if prefix else key
        yield from (".".join(path.split(".")[: n + 1]) for n in range(path.count(".") + 1))
        for element in value if isinstance(value, list) else [value]:
            if isinstance(element, dict):
                yield from field_paths(element, path)


def mapping_rejection(item: BulkItem, source: dict[str, Any], path: str) -> EsError:
    """The `document_parsing_exception` ES gives a document whose field `path` the mapping refuses."""
    check = _Check(item.id or "", item.raw or "", {})
    return check.error(path, check.field_reason(path, "keyword", _value_at(source, path)))


def _value_at(source: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, whether the source nests objects or spells dotted names."""
    if path in source:
        return source[path]
    head, _, rest = path.partition(".")
    inner = source.get(head)
    return _value_at(inner, rest) if rest and isinstance(inner, dict) else None


def parse_source(raw: str) -> dict[str, Any]:
    """A source line as a JSON object, or ES's `document_parsing_exception`."""
    try:
        source = json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"[1:{exc.colno}]"
        raise EsError(400, "document_parsing_exception", f"{where} failed to parse: {exc.msg}",
                      caused_by=caused_by("x_content_parse_exception", f"{where} {exc.msg}")) from None
    if not isinstance(source, dict):
        column = len(raw) - len(raw.lstrip()) + 1
        raise EsError(400, "document_parsing_exception",
                      f"[1:{column}] Malformed content, must start with an object")
    return source


# -- indices and documents -------------------------------------------------------------------------


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
        return EsError(409, "version_conflict_engine_exception", f"[{doc_id}]: version conflict, {reason}",
                       index_uuid=self.uuid, shard="0", index=self.name)

    def check_mapping(self, doc_id: str, raw: str, source: dict[str, Any]) -> None:
        check = _Check(doc_id, raw, self.mapping)
        check.walk(source)
        self.mapping.update(check.new)


def resolve(indices: dict[str, Index], expression: str, resource_type: str = "index_or_alias") -> list[Index]:
    """The indices an expression (comma list, wildcards, `_all`) names; a missing concrete one is a 404."""
    found: dict[str, Index] = {}
    for part in expression.split(","):
        if part in ("_all", "*") or "*" in part or "?" in part:
            pattern = "*" if part == "_all" else part
            found.update((n, i) for n, i in indices.items()
                         if fnmatch.fnmatchcase(n, pattern) and (pattern.startswith(".") or n[0] != "."))
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
            return 200, {"_index": name, "_id": doc_id, "_version": doc.version, "_seq_no": doc.seq_no,
                         "_primary_term": PRIMARY_TERM, "found": True, "_source": doc.source}

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
                raise EsError(404, "document_missing_exception", f"[{item.id}]: document missing",
                              index_uuid=index.uuid, shard="0", index=index.name)
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
            raise index.conflict(doc_id,
                                 f"current version [{prior}] is {relation} the one provided [{wanted}]")
        return wanted


def _check_seq_no(index: Index, doc_id: str, meta: dict[str, Any], current: Doc | None) -> None:
    wanted = (meta["if_seq_no"], meta.get("if_primary_term", 0))
    required = f"required seqNo [{wanted[0]}], primary term [{wanted[1]}]."
    if current is None:
        raise index.conflict(doc_id, f"{required} but no document was found")
    if (current.seq_no, PRIMARY_TERM) != wanted:
        raise index.conflict(doc_id, f"{required} current document has seqNo [{current.seq_no}] "
                                     f"and primary term [{PRIMARY_TERM}]")


def failed_item(item: BulkItem, error: EsError) -> dict[str, Any]:
    return {"_index": item.index, "_id": item.id, "status": error.status, "error": error.body()}


def _result(index: Index, doc_id: str, version: int, seq_no: int, result: str) -> dict[str, Any]:
    return {
        "_index": index.name, "_id": doc_id, "_version": version, "result": result, "_shards": dict(SHARDS),
        "_seq_no": seq_no, "_primary_term": PRIMARY_TERM,
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
        "health": "green", "status": "open", "index": index.name, "uuid": index.uuid, "pri": "1", "rep": "0",
        "docs.count": str(index.visible), "docs.deleted": "0", "store.size": size, "pri.store.size": size,
        "dataset.size": size,
    }
