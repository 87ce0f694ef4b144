"""Decode stream entries and collapse a batch in memory to the newest operation per key.

A record operation becomes an `OpRow` when it is decoded: the JSON text of the record, or, for
the lean collections (likes, reposts, follows, blocks, list items; see collections.py), only
the lexicon's fields, read here: a record of those that lacks one is invalid input.

Collapsing keeps the semantics of applying the events one by one because every rule is a
"newest wins" register with a total order: records by (rev, live over tombstone), actors by seq,
labels by (cts, neg), markers by rev. Applying the maximum once equals applying them all in
any order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

import msgspec

from atp import InvalidTid
from atp.tid import tid_from_time
from schemas import (
    Account,
    Identity,
    LabelBatch,
    RecordCreate,
    RecordDelete,
    RecordUpdate,
    RepoMarker,
    SchemaError,
    StreamContract,
)
from workers.indexer.collections import BLOCK_NSID, FOLLOW_NSID, LEAN, LIKE_NSID, LIST_ITEM_NSID, REPOST_NSID

# COPY rows, in the staging tables' column order (store.py). An OpRow is (did, collection, rkey,
# rev, cid, json, tombstone, subject, subject_cid, ref, created_at, campaign).
OpRow: TypeAlias = tuple[
    str,
    str,
    str,
    str,
    str | None,
    str | None,
    bool,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
]
LabelRow: TypeAlias = tuple[str, str, str, str, bool, datetime, datetime | None]
# (did, rev, commit, campaign); commit None: a deleted account.
MarkerRow: TypeAlias = tuple[str, str, str | None, str | None]
AccountRow: TypeAlias = tuple[str, int, bool, str | None]
IdentityRow: TypeAlias = tuple[str, int, str | None]


def decode(contract: StreamContract, fields: Any) -> Any:
    """Decode and validate one entry of the stream of `contract`: an OpRow for a record operation,
    else the message; raises SchemaError for anything the indexer cannot apply."""
    message = contract.decode(fields)
    kind = type(message)  # msgspec builds exactly these classes: identity beats isinstance
    if kind is RecordCreate or kind is RecordUpdate:
        return _write_row(message)
    if kind is RecordDelete:
        return (
            message.did,
            message.collection,
            message.rkey,
            message.rev,
            None,
            None,
            True,
            None,
            None,
            None,
            None,
            None,
        )
    if kind is LabelBatch:
        for label in message.labels:
            parse_time(label.cts, "cts")
            if label.exp is not None:
                parse_time(label.exp, "exp")
    return message


def _write_row(m: RecordCreate | RecordUpdate) -> OpRow:
    campaign = m.campaign if type(m) is RecordCreate else None  # snapshots are creates
    read = _LEAN_READERS.get(m.collection)
    if read is None:
        # msgspec.Raw already guarantees well-formed JSON; the data model needs an object.
        first: object = memoryview(m.record)[:1]  # compares by content, without a copy
        if first != b"{":
            raise SchemaError("record is not a JSON object")
        json = str(m.record, "utf-8")
        return (m.did, m.collection, m.rkey, m.rev, m.cid, json, False, None, None, None, None, campaign)
    try:
        subject, subject_cid, ref, created_at = read(m.record)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise SchemaError(f"{m.collection} record: {exc}") from None
    for text in (subject, subject_cid, ref, created_at):
        if text is not None and "\x00" in text:  # PostgreSQL text cannot hold NUL
            raise SchemaError(f"{m.collection} record: a field holds U+0000")
    return (
        m.did,
        m.collection,
        m.rkey,
        m.rev,
        m.cid,
        None,
        False,
        subject,
        subject_cid,
        ref,
        created_at,
        campaign,
    )


class _StrongRef(msgspec.Struct):
    uri: str
    cid: str | None = None


class _RefRecord(msgspec.Struct, rename="camel"):
    """app.bsky.feed.like, app.bsky.feed.repost: `subject` is a strong ref to a record."""

    subject: _StrongRef
    created_at: str | None = None


class _DidRecord(msgspec.Struct, rename="camel"):
    """app.bsky.graph.follow, app.bsky.graph.block: `subject` is a DID."""

    subject: str
    created_at: str | None = None


class _ListItemRecord(msgspec.Struct, rename="camel"):
    """app.bsky.graph.listitem: `subject` is a DID, `list` the list's AT-URI."""

    subject: str
    list: str
    created_at: str | None = None


_Fields: TypeAlias = tuple[str | None, str | None, str | None, str | None]
_decode_ref = msgspec.json.Decoder(_RefRecord).decode
_decode_did = msgspec.json.Decoder(_DidRecord).decode
_decode_list_item = msgspec.json.Decoder(_ListItemRecord).decode


def _ref_reader(raw: Any) -> _Fields:
    r = _decode_ref(raw)
    return r.subject.uri, r.subject.cid, None, r.created_at


def _did_reader(raw: Any) -> _Fields:
    r = _decode_did(raw)
    return r.subject, None, None, r.created_at


def _list_item_reader(raw: Any) -> _Fields:
    r = _decode_list_item(raw)
    return r.subject, None, r.list, r.created_at


# (subject, subject_cid, ref, created_at) of a lean collection's record.
_LEAN_READERS: dict[str, Callable[[Any], _Fields]] = {
    LIKE_NSID: _ref_reader,
    REPOST_NSID: _ref_reader,
    FOLLOW_NSID: _did_reader,
    BLOCK_NSID: _did_reader,
    LIST_ITEM_NSID: _list_item_reader,
}
assert frozenset(_LEAN_READERS) == LEAN, "every lean collection needs a reader, and only those"


def deletion_rev(time: str) -> str | None:
    """The rev a deletion at `time` (an event's RFC 3339 time, millisecond precision) sweeps up to:
    the TID of the next millisecond, above the rev of any commit made before it. None when the
    time cannot be read (the account is then only hidden, as any inactive account is)."""
    try:
        moment = datetime.fromisoformat(time)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    us = (int(moment.timestamp() * 1000) + 1) * 1000
    try:
        return tid_from_time(us)
    except InvalidTid:
        return None


def parse_time(text: str, what: str) -> datetime:
    """An RFC 3339 datetime; naive values are taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SchemaError(f"label {what} is not a datetime: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _record_key(row: OpRow) -> tuple[str, bool]:
    # At equal revs a live write beats a tombstone: a snapshot create at the marker's rev must
    # survive the marker's sweep whichever is applied first.
    return (row[3], not row[6])


@dataclass
class Batch:
    """The newest operation per record, label key, actor and repo of a set of events."""

    ops: dict[tuple[str, str, str], OpRow] = field(default_factory=dict)
    markers: dict[str, MarkerRow] = field(default_factory=dict)
    labels: dict[tuple[str, str, str, str], LabelRow] = field(default_factory=dict)
    accounts: dict[str, AccountRow] = field(default_factory=dict)
    identities: dict[str, IdentityRow] = field(default_factory=dict)
    events: int = 0

    @classmethod
    def of(cls, messages: Iterable[Any]) -> Batch:
        """Collapse decoded messages (see `decode`) into a batch."""
        batch = cls()
        for message in messages:
            batch.add(message)
        return batch

    def add(self, message: Any) -> None:
        """Fold one decoded message in."""
        self.events += 1
        try:
            fold = _FOLD[type(message)]
        except KeyError:  # pragma: no cover - decode only yields the types in _FOLD
            raise SchemaError(f"unexpected message {type(message).__name__}") from None
        fold(self, message)

    def _add_op(self, row: OpRow) -> None:
        key = (row[0], row[1], row[2])
        old = self.ops.get(key)
        if old is None or (row[3], not row[6]) >= (old[3], not old[6]):  # see _record_key
            self.ops[key] = row

    def _add_labels(self, m: LabelBatch) -> None:
        for label in m.labels:
            self._add_label(label)

    def _add_marker(self, m: RepoMarker) -> None:
        self._add_marker_row(m.did, m.rev, m.commit, m.campaign)

    def _add_marker_row(self, did: str, rev: str, commit: str | None, campaign: str | None = None) -> None:
        old = self.markers.get(did)
        if old is None or rev > old[1]:
            self.markers[did] = (did, rev, commit, campaign)

    def _add_account(self, a: Account) -> None:
        old = self.accounts.get(a.did)
        if old is None or a.seq >= old[1]:
            self.accounts[a.did] = (a.did, a.seq, a.active, a.status)
        if not a.active and a.status == "deleted":
            # A deleted account is an empty snapshot as of the event's time: every record written
            # before it becomes a tombstone (the marker's sweep, aggregates included).
            rev = deletion_rev(a.time)
            if rev is not None:
                self._add_marker_row(a.did, rev, None)

    def _add_identity(self, i: Identity) -> None:
        old = self.identities.get(i.did)
        if old is None or i.seq >= old[1]:
            self.identities[i.did] = (i.did, i.seq, i.handle)

    def _add_label(self, label: Any) -> None:
        cts = parse_time(label.cts, "cts")
        exp = parse_time(label.exp, "exp") if label.exp is not None else None
        key = (label.src, label.uri, label.cid or "", label.val)
        old = self.labels.get(key)
        # Equal cts: the negation wins, matching the SQL gate `(cts, neg) <= (new.cts, new.neg)`.
        if old is None or (cts, label.neg) >= (old[5], old[4]):
            self.labels[key] = (*key, label.neg, cts, exp)


_FOLD: dict[type, Any] = {
    tuple: Batch._add_op,
    RepoMarker: Batch._add_marker,
    Account: Batch._add_account,
    Identity: Batch._add_identity,
    LabelBatch: Batch._add_labels,
}
