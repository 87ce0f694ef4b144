"""Builders for indexer test entries: events encoded exactly as producers write them."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import orjson

from schemas import (
    Account,
    Label,
    LabelBatch,
    RecordCreate,
    RecordDelete,
    RecordUpdate,
    RepoMarker,
    encode_entry,
)
from streams import Entry

LIVE = "firehose_live"
BACKFILL = "firehose_backfill"
LABELS = "label_live"
POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
REPOST = "app.bsky.feed.repost"
FOLLOW = "app.bsky.graph.follow"
BLOCK = "app.bsky.graph.block"
PROFILE = "app.bsky.actor.profile"

_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_ids = itertools.count(1)


def tid(n: int) -> str:
    """A 13-character TID-like string whose order is the order of `n`."""
    chars = []
    for _ in range(13):
        chars.append(_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(chars))


def uri(did: str, collection: str, rkey: str) -> str:
    return f"at://{did}/{collection}/{rkey}"


def body(collection: str, **fields: Any) -> dict[str, Any]:
    """A record of `collection`; `subject`/`parent` are AT-URIs or DIDs as the lexicon wants."""
    record: dict[str, Any] = {"$type": collection, "createdAt": "2024-01-01T00:00:00.000Z"}
    if collection == POST:
        record["text"] = fields.get("text", "hello")
        if fields.get("parent"):
            ref = {"uri": fields["parent"], "cid": "bafyparent"}
            record["reply"] = {"root": ref, "parent": ref}
    elif collection in (LIKE, REPOST):
        record["subject"] = {"uri": fields["subject"], "cid": "bafysubject"}
    elif collection in (FOLLOW, BLOCK):
        record["subject"] = fields["subject"]
    elif collection == PROFILE:
        record["displayName"] = fields.get("name", "someone")
    return record


def entry(stream: str, message: Any, entry_id: str | None = None) -> Entry:
    return Entry(stream, entry_id or f"{next(_ids)}-0", encode_entry(stream, message))


def create(
    did: str,
    collection: str,
    rkey: str,
    rev: str,
    cid: str,
    record: dict[str, Any],
    *,
    seq: int = 1,
    update: bool = False,
) -> Any:
    cls = RecordUpdate if update else RecordCreate
    return cls(
        seq=seq,
        did=did,
        rev=rev,
        collection=collection,
        rkey=rkey,
        cid=cid,
        record=msgspec.Raw(orjson.dumps(record)),
    )


def delete(did: str, collection: str, rkey: str, rev: str, *, seq: int = 1) -> RecordDelete:
    return RecordDelete(seq=seq, did=did, rev=rev, collection=collection, rkey=rkey)


def marker(did: str, rev: str, records: int = 0) -> RepoMarker:
    return RepoMarker(seq=-1, did=did, rev=rev, commit=f"bafycommit{rev}", records=records)


def account(did: str, seq: int, active: bool, status: str | None = None) -> Account:
    return Account(seq=seq, did=did, active=active, status=status)


def labels(*items: Label, seq: int = 1) -> LabelBatch:
    return LabelBatch(seq=seq, labels=list(items))
