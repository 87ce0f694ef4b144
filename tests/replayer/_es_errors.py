"""Elasticsearch's exceptions as `FakeElasticsearch` renders them: one `EsError` type and the few
errors every part of the fake raises (`illegal_argument_exception`, `index_not_found_exception`).

An `EsError` becomes a bulk item's `error` object (`body()`) or a whole-request answer
(`envelope()`, with ES's `root_cause` list and the HTTP status).
"""

from __future__ import annotations

from typing import Any


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
        404,
        "index_not_found_exception",
        f"no such index [{name}]",
        **{"resource.type": resource_type, "resource.id": name, "index_uuid": "_na_", "index": name},
    )
