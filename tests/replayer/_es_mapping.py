"""Dynamic mapping as `FakeElasticsearch` applies it: parsing a document's source, fixing each
field's type from its first value, and ES's coercion checks on later values.

A field's first value fixes its type (long, float, boolean, date for ISO-8601 strings, text,
object); a later value that ES would not coerce fails with `document_parsing_exception`, worded
and located as ES does. Nothing here knows about versions, faults or HTTP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from tests.replayer._es_bulk import BulkItem
from tests.replayer._es_errors import EsError, caused_by

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}([.,]\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?")


def parse_source(raw: str) -> dict[str, Any]:
    """A source line as a JSON object, or ES's `document_parsing_exception`."""
    try:
        source = json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"[1:{exc.colno}]"
        raise EsError(
            400,
            "document_parsing_exception",
            f"{where} failed to parse: {exc.msg}",
            caused_by=caused_by("x_content_parse_exception", f"{where} {exc.msg}"),
        ) from None
    if not isinstance(source, dict):
        column = len(raw) - len(raw.lstrip()) + 1
        raise EsError(
            400, "document_parsing_exception", f"[1:{column}] Malformed content, must start with an object"
        )
    return source


def check_mapping(mapping: dict[str, str], doc_id: str, raw: str, source: dict[str, Any]) -> None:
    """Add the source's new fields to `mapping`, or raise (leaving it unchanged) if a value does not fit."""
    check = _Check(doc_id, raw, mapping)
    check.walk(source)
    mapping.update(check.new)


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
    if kind == "date" and (
        isinstance(value, bool)
        or (isinstance(value, str) and not (_is_date(value) or re.fullmatch(r"\d{4}(-\d{2})?|-?\d+", value)))
    ):
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
            raise self.error(
                path,
                f"object mapping for [{path}] tried to parse field [{path}] as object, "
                "but found a concrete value",
            )
        elif kind != "object" and (problem := _coercion_problem(kind, value)):
            raise self.error(path, self.field_reason(path, kind, value), caused_by=problem)
        if kind == "object":
            self.walk(value, path)

    def field_reason(self, path: str, kind: str, value: Any) -> str:
        return (
            f"failed to parse field [{path}] of type [{kind}] in document with id '{self.doc_id}'. "
            f"Preview of field's value: '{_preview(value)}'"
        )

    def error(self, path: str, reason: str, **meta: Any) -> EsError:
        return EsError(400, "document_parsing_exception", f"[{_location(self.raw, path)}] {reason}", **meta)
