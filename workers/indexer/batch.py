"""Decode stream entries and collapse a batch in memory to the newest operation per key.

Collapsing keeps the semantics of applying the events one by one because every rule is a
"newest wins" register with a total order: records by (rev, live over tombstone), actors by seq,
labels by (cts, neg), markers by rev. Applying the maximum once equals applying them all in
any order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

from schemas import (
    Account,
    Identity,
    LabelBatch,
    RecordCreate,
    RecordDelete,
    RecordUpdate,
    RepoMarker,
    SchemaError,
    contract_for,
)

# COPY rows, in the staging tables' column order (store.py).
OpRow: TypeAlias = tuple[str, str, str, str, str, str | None, str | None, bool]
LabelRow: TypeAlias = tuple[str, str, str, str, bool, datetime, datetime | None]
MarkerRow: TypeAlias = tuple[str, str, str]
AccountRow: TypeAlias = tuple[str, int, bool, str | None]
IdentityRow: TypeAlias = tuple[str, int, str | None]


def at_uri(did: str, collection: str, rkey: str) -> str:
    """The AT-URI of a record."""
    return f"at://{did}/{collection}/{rkey}"


def decode(stream: str, fields: Any) -> Any:
    """Decode and validate one entry; raises SchemaError for anything the indexer cannot apply."""
    message = _contract(stream).decode(fields)
    kind = type(message)  # msgspec builds exactly these classes: identity beats isinstance
    if kind is RecordCreate or kind is RecordUpdate:
        _check_record(message.record)
    elif kind is LabelBatch:
        for label in message.labels:
            parse_time(label.cts, "cts")
            if label.exp is not None:
                parse_time(label.exp, "exp")
    return message


# Stream names are few (prefixed variants of three): resolve each contract once.
_contract = functools.lru_cache(maxsize=64)(contract_for)


def _check_record(raw: Any) -> None:
    # msgspec.Raw already guarantees well-formed JSON; the data model needs an object.
    if memoryview(raw)[:1] != b"{":
        raise SchemaError("record is not a JSON object")


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
    return (row[4], not row[7])


@dataclass
class Batch:
    """The newest operation per record uri, label key, actor and repo of a set of events."""

    ops: dict[str, OpRow] = field(default_factory=dict)
    markers: dict[str, MarkerRow] = field(default_factory=dict)
    labels: dict[tuple[str, str, str, str], LabelRow] = field(default_factory=dict)
    accounts: dict[str, AccountRow] = field(default_factory=dict)
    identities: dict[str, IdentityRow] = field(default_factory=dict)
    events: int = 0

    @classmethod
    def of(cls, messages: Iterable[Any]) -> Batch:
        """Collapse decoded messages into a batch."""
        batch = cls()
        for message in messages:
            batch.add(message)
        return batch

    def add(self, message: Any) -> None:
        """Fold one decoded message in."""
        self.events += 1
        try:
            fold = _FOLD[type(message)]
        except KeyError:  # pragma: no cover - the registry only yields the types in _FOLD
            raise SchemaError(f"unexpected message {type(message).__name__}") from None
        fold(self, message)

    def _add_write(self, m: RecordCreate | RecordUpdate) -> None:
        # Most events take this path: _add_op inlined, the row built only when it wins.
        uri = f"at://{m.did}/{m.collection}/{m.rkey}"
        old = self.ops.get(uri)
        if old is None or (m.rev, True) >= _record_key(old):  # (rev, live): see _record_key
            self.ops[uri] = (uri, m.did, m.collection, m.rkey, m.rev, m.cid, str(m.record, "utf-8"), False)

    def _add_delete(self, m: RecordDelete) -> None:
        uri = at_uri(m.did, m.collection, m.rkey)
        self._add_op((uri, m.did, m.collection, m.rkey, m.rev, None, None, True))

    def _add_labels(self, m: LabelBatch) -> None:
        for label in m.labels:
            self._add_label(label)

    def _add_op(self, row: OpRow) -> None:
        old = self.ops.get(row[0])
        if old is None or _record_key(row) >= _record_key(old):
            self.ops[row[0]] = row

    def _add_marker(self, m: RepoMarker) -> None:
        old = self.markers.get(m.did)
        if old is None or m.rev > old[1]:
            self.markers[m.did] = (m.did, m.rev, m.commit)

    def _add_account(self, a: Account) -> None:
        old = self.accounts.get(a.did)
        if old is None or a.seq >= old[1]:
            self.accounts[a.did] = (a.did, a.seq, a.active, a.status)

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
    RecordCreate: Batch._add_write,
    RecordUpdate: Batch._add_write,
    RecordDelete: Batch._add_delete,
    RepoMarker: Batch._add_marker,
    Account: Batch._add_account,
    Identity: Batch._add_identity,
    LabelBatch: Batch._add_labels,
}

