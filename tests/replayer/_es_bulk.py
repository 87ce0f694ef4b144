"""The bulk NDJSON format behind `FakeElasticsearch`'s `_bulk`: parsing and validating a request
body as ES does, and rendering a failed item.

Malformed input (a missing trailing newline, a bad action/metadata line, an unknown metadata key or
update field, a failed validation) fails the whole request with ES's `EsError`. Nothing here knows
about indices, documents or HTTP.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.replayer._es_errors import EsError, bad_request

_META_KEYS = frozenset(
    "_index _id routing op_type version version_type if_seq_no if_primary_term retry_on_conflict "
    "pipeline _source require_alias require_data_stream dynamic_templates list_executed_pipelines".split()
)
_UPDATE_KEYS = frozenset("doc upsert doc_as_upsert script scripted_upsert detect_noop _source".split())
_ACTIONS = ("create", "delete", "index", "update")


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


def new_id() -> str:
    """A 20-character URL-safe id, the length of ES's auto-generated ids."""
    return secrets.token_urlsafe(15)


def failed_item(item: BulkItem, error: EsError) -> dict[str, Any]:
    return {"_index": item.index, "_id": item.id, "status": error.status, "error": error.body()}


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
    return BulkItem(
        action,
        None if index is None else str(index),
        None if doc_id is None else str(doc_id),
        meta,
        line=line,
    )


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
            raise EsError(
                400, "x_content_parse_exception", f"[{line}:2] [UpdateRequest] unknown field [{key}]"
            )
        if key in ("doc", "upsert") and not isinstance(value, dict):
            raise EsError(
                400,
                "x_content_parse_exception",
                f"[{line}:2] [UpdateRequest] {key} doesn't support values of type: {_token(value)}",
            )


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
        yield (
            "internal versioning can not be used for optimistic concurrency control. "
            "Please use `if_seq_no` and `if_primary_term` instead"
        )
