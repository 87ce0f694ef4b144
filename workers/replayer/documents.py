"""Captain's Log files: finding them in a stable order, and turning one into an index document.

Layout under the root (`REPLAYER_ROOT`):

    captures/YYYY-MM-DD/*.json   one capture per file, document id `trace_id`
    CL-*.json                    one reflection per file, document id `entry_id`

Every other field of a file passes through into the document unchanged; unknown fields are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from schemas import CaptainsLogDoc

CAPTURE = "capture"
REFLECTION = "reflection"
KINDS = (CAPTURE, REFLECTION)

# Elasticsearch refuses document ids longer than 512 bytes.
MAX_ID_BYTES = 512

log = logging.getLogger("streamfill.replayer")

_INDEX_PREFIX = {CAPTURE: "agent-captains-captures-", REFLECTION: "agent-captains-reflections-"}


class MalformedFile(ValueError):
    """A file that can never become a document (bad JSON, missing or invalid id / timestamp)."""


class _Capture(msgspec.Struct):
    trace_id: str
    timestamp: str


class _Reflection(msgspec.Struct):
    entry_id: str
    timestamp: str


@dataclass(frozen=True, slots=True)
class LogFile:
    """One file as found on disk: its path relative to the root (the ledger's key) and version."""

    rel: str
    kind: str
    mtime_ns: int
    size: int

    @property
    def order(self) -> tuple[int, str]:
        """The stable scan order: modification time, then path."""
        return (self.mtime_ns, self.rel)


def find_files(root: Path) -> list[LogFile]:
    """Every capture and reflection under `root`, sorted by (mtime, path)."""
    found = [
        *_stat_all(root, sorted(root.glob("captures/*/*.json")), CAPTURE),
        *_stat_all(root, sorted(root.glob("CL-*.json")), REFLECTION),
    ]
    found.sort(key=lambda f: f.order)
    return found


def _stat_all(root: Path, paths: list[Path], kind: str) -> list[LogFile]:
    files = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:  # removed between listing and stat: nothing to replay
            continue
        rel = path.relative_to(root).as_posix()
        if not _utf8(rel):
            # The ledger, the stream and Elasticsearch all need a text path: such a name cannot
            # be recorded anywhere, so it is reported here, every pass, until it is renamed.
            log.warning("skipping a file whose name is not UTF-8", extra={"path": repr(rel)})
            continue
        if path.is_file():
            files.append(LogFile(rel, kind, st.st_mtime_ns, st.st_size))
    return files


def _utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as surrogate escapes
        return False
    return True


def read_document(root: Path, f: LogFile, run: int) -> CaptainsLogDoc:
    """The document of file `f`, or MalformedFile saying what is wrong with it."""
    try:
        data = (root / f.rel).read_bytes()
    except OSError as exc:
        raise MalformedFile(f"cannot read {f.rel}: {exc.strerror or exc}") from exc
    try:
        obj: Any = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise MalformedFile(f"{f.rel}: not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedFile(f"{f.rel}: expected a JSON object, got {type(obj).__name__}")
    doc_id, timestamp = _identity(f, obj)
    return CaptainsLogDoc(
        kind=f.kind,
        doc_id=doc_id,
        index=_INDEX_PREFIX[f.kind] + timestamp.strftime("%Y-%m-%d"),
        path=f.rel,
        # Re-encoded compactly: a bulk request is NDJSON, one document per line.
        body=msgspec.Raw(msgspec.json.encode(obj)),
        run=run,
        mtime_ns=f.mtime_ns,
        size=f.size,
    )


def _identity(f: LogFile, obj: dict[str, Any]) -> tuple[str, datetime]:
    try:
        if f.kind == CAPTURE:
            capture = msgspec.convert(obj, _Capture)
            doc_id, raw_ts = capture.trace_id, capture.timestamp
        else:
            reflection = msgspec.convert(obj, _Reflection)
            doc_id, raw_ts = reflection.entry_id, reflection.timestamp
    except msgspec.ValidationError as exc:
        raise MalformedFile(f"{f.rel}: {exc}") from exc
    if not doc_id.strip():
        raise MalformedFile(f"{f.rel}: empty document id")
    if len(doc_id.encode()) > MAX_ID_BYTES:
        raise MalformedFile(f"{f.rel}: document id longer than {MAX_ID_BYTES} bytes")
    return doc_id, parse_timestamp(f.rel, raw_ts)


def parse_timestamp(rel: str, raw: str) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime; naive timestamps are taken as UTC."""
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise MalformedFile(f"{rel}: timestamp {raw!r} is not ISO 8601") from None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)
