"""The message types carried by each stream (see ARCHITECTURE.md, "Streams are the contracts").

New fields must get defaults so that payloads written by older producers keep decoding;
tests/test_schemas.py holds saved example payloads of every type.
"""

from __future__ import annotations

import msgspec

# Backfilled records carry seq = -1 (rsky / divy/backfill convention): they come from a
# repo snapshot, not from a relay sequence number.
BACKFILL_SEQ = -1


class RepoJob(msgspec.Struct, frozen=True, kw_only=True):
    """`repo_backfill`: one repo to snapshot. `host` is the relay that listed it."""

    did: str
    host: str
    rev: str | None = None
    status: str | None = None
    active: bool = True
    # Why the job exists: "list" (listRepos paging), "sync" (#sync frame), "gap" (commit chain broke).
    reason: str = "list"
    # The backfill campaign that enqueued the job (`streamfill campaign apply`), or None.
    campaign: str | None = None


class RecordCreate(msgspec.Struct, frozen=True, kw_only=True, tag="create", tag_field="type"):
    """A record written at `rev`; `record` is the AT Protocol JSON data model, kept as raw JSON."""

    seq: int
    did: str
    rev: str
    collection: str
    rkey: str
    cid: str
    record: msgspec.Raw
    time: str = ""
    # Set on backfilled records of a campaign's snapshot (copied from its RepoJob).
    campaign: str | None = None


class RecordUpdate(msgspec.Struct, frozen=True, kw_only=True, tag="update", tag_field="type"):
    """A record replaced at `rev`."""

    seq: int
    did: str
    rev: str
    collection: str
    rkey: str
    cid: str
    record: msgspec.Raw
    time: str = ""


class RecordDelete(msgspec.Struct, frozen=True, kw_only=True, tag="delete", tag_field="type"):
    """A record deleted at `rev`."""

    seq: int
    did: str
    rev: str
    collection: str
    rkey: str
    time: str = ""


class Account(msgspec.Struct, frozen=True, kw_only=True, tag="account", tag_field="type"):
    """`#account`: hosting status changed (active, takendown, deactivated, deleted, suspended)."""

    seq: int
    did: str
    active: bool
    status: str | None = None
    time: str = ""


class Identity(msgspec.Struct, frozen=True, kw_only=True, tag="identity", tag_field="type"):
    """`#identity`: handle or DID document changed."""

    seq: int
    did: str
    handle: str | None = None
    time: str = ""


class RepoMarker(msgspec.Struct, frozen=True, kw_only=True, tag="repo", tag_field="type"):
    """End of a backfilled snapshot: every record of `did` at commit `rev` was written before it."""

    seq: int
    did: str
    rev: str
    commit: str
    records: int = 0
    time: str = ""
    campaign: str | None = None


FirehoseEvent = RecordCreate | RecordUpdate | RecordDelete | Account | Identity | RepoMarker


class Label(msgspec.Struct, frozen=True, kw_only=True):
    """One label as in `com.atproto.label.defs#label`."""

    src: str
    uri: str
    val: str
    cts: str
    cid: str | None = None
    neg: bool = False
    exp: str | None = None


class LabelBatch(msgspec.Struct, frozen=True, kw_only=True):
    """`label_live`: the labels of one `#labels` frame."""

    seq: int
    labels: list[Label]
    src_host: str = ""


class CaptainsLogDoc(msgspec.Struct, frozen=True, kw_only=True):
    """`captains_log`: one log document to (re)index into Elasticsearch."""

    kind: str  # "capture" | "reflection"
    doc_id: str
    index: str
    path: str
    body: msgspec.Raw  # the file's JSON object, passed through unchanged
    # Which scan pass wrote it and which version of the file it came from, so the ledger
    # can tell a result for the file as it is now from one for an older version.
    run: int = 0
    mtime_ns: int = 0
    size: int = 0


class CaptainsLogResult(msgspec.Struct, frozen=True, kw_only=True):
    """`captains_log_results`: what Elasticsearch did with one document (for the replayer's ledger)."""

    kind: str
    doc_id: str
    index: str
    path: str
    run: int
    mtime_ns: int
    size: int
    status: str  # "indexed" | "failed"
    error: str = ""
    version: int | None = None  # Elasticsearch's _version after the write
