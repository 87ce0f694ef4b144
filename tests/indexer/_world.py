"""A small model of a few repos: commits, the firehose, backfill snapshots, and the final truth.

The model is the oracle of the property tests: it knows which records are live at the end and
what the per-collection tables and aggregates must hold.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.indexer._events import (
    BACKFILL,
    FOLLOW,
    LIKE,
    LIVE,
    POST,
    PROFILE,
    REPOST,
    body,
    create,
    delete,
    entry,
    marker,
    tid,
    uri,
)

DIDS = ("did:plc:alice", "did:plc:bob", "did:plc:carol")
COLLECTIONS = (POST, POST, LIKE, REPOST, FOLLOW, PROFILE)


@dataclass
class Rec:
    """A live record in the model."""

    did: str
    collection: str
    rkey: str
    cid: str
    rev: str
    fields: dict[str, Any]

    @property
    def uri(self) -> str:
        return uri(self.did, self.collection, self.rkey)


@dataclass
class Commit:
    """One commit: a single operation at `rev` and the repo's live records right after it."""

    did: str
    rev: str
    event: Any
    live_after: dict[str, Rec]


@dataclass
class World:
    """Commits of every repo in global rev order, and the live records at the end."""

    commits: dict[str, list[Commit]] = field(default_factory=lambda: {d: [] for d in DIDS})
    live: dict[str, dict[str, Rec]] = field(default_factory=lambda: {d: {} for d in DIDS})
    posts: list[str] = field(default_factory=list)
    _revs: Any = field(default_factory=lambda: itertools.count(1000))
    _rkeys: Any = field(default_factory=lambda: itertools.count(1))
    _cids: Any = field(default_factory=lambda: itertools.count(1))

    def step(self, did_i: int, kind: int, coll_i: int, pick: int) -> None:
        """Apply one generated step: kind 0-2 create, 3 update, 4 delete (on `pick`-th record)."""
        did = DIDS[did_i % len(DIDS)]
        records = sorted(self.live[did].values(), key=lambda r: r.uri)
        if kind <= 2 or not records:
            self._create(did, COLLECTIONS[coll_i % len(COLLECTIONS)], pick)
        elif kind == 3:
            self._update(records[pick % len(records)], pick)
        else:
            self._delete(records[pick % len(records)])

    def _subject(self, collection: str, pick: int) -> dict[str, Any]:
        if collection in (LIKE, REPOST):
            target = self.posts[pick % len(self.posts)] if self.posts else "at://did:plc:x/p/none"
            return {"subject": target}
        if collection == FOLLOW:
            return {"subject": DIDS[pick % len(DIDS)]}
        if collection == POST and self.posts and pick % 2:
            return {"parent": self.posts[pick % len(self.posts)]}
        return {}

    def _create(self, did: str, collection: str, pick: int) -> None:
        # Profiles live at rkey "self": deleting and re-creating one reuses the uri.
        rkey = "self" if collection == PROFILE else f"r{next(self._rkeys)}"
        if uri(did, collection, rkey) in self.live[did]:
            self._update(self.live[did][uri(did, collection, rkey)], pick)
            return
        rec = Rec(did, collection, rkey, "", "", self._subject(collection, pick))
        if collection == POST:
            self.posts.append(rec.uri)
        self._write(rec, update=False)

    def _update(self, rec: Rec, pick: int) -> None:
        fields = self._subject(rec.collection, pick) or rec.fields
        self._write(Rec(rec.did, rec.collection, rec.rkey, "", "", fields), update=True)

    def _write(self, rec: Rec, *, update: bool) -> None:
        rec.rev, rec.cid = tid(next(self._revs)), f"bafy{next(self._cids)}"
        self.live[rec.did][rec.uri] = rec
        event = create(
            rec.did,
            rec.collection,
            rec.rkey,
            rec.rev,
            rec.cid,
            body(rec.collection, **rec.fields),
            update=update,
        )
        self._commit(rec.did, rec.rev, event)

    def _delete(self, rec: Rec) -> None:
        rev = tid(next(self._revs))
        del self.live[rec.did][rec.uri]
        self._commit(rec.did, rev, delete(rec.did, rec.collection, rec.rkey, rev))

    def _commit(self, did: str, rev: str, event: Any) -> None:
        self.commits[did].append(Commit(did, rev, event, dict(self.live[did])))

    # -- what the indexer receives ---------------------------------------------------------------

    def live_entries(self, did: str, start: int) -> list[Any]:
        """Firehose entries of `did` from its `start`-th commit on."""
        return [entry(LIVE, c.event) for c in self.commits[did][start:]]

    def snapshot_entries(self, did: str, at: int) -> list[Any]:
        """A backfill of `did` at its `at`-th commit: every live record at that rev, then the marker."""
        commit = self.commits[did][at]
        out = [
            entry(
                BACKFILL,
                create(did, r.collection, r.rkey, commit.rev, r.cid, body(r.collection, **r.fields), seq=-1),
            )
            for r in sorted(commit.live_after.values(), key=lambda r: r.uri)
        ]
        out.append(entry(BACKFILL, marker(did, commit.rev, len(out))))
        return out

    # -- the truth -------------------------------------------------------------------------------

    def truth(self) -> list[dict[str, Any]]:
        """Ground-truth lines as devnet writes them."""
        lines: list[dict[str, Any]] = []
        for did, records in self.live.items():
            lines.extend(
                {
                    "type": "record",
                    "did": did,
                    "collection": r.collection,
                    "rkey": r.rkey,
                    "cid": r.cid,
                    "rev": r.rev,
                }
                for r in records.values()
            )
        return lines

    def all_live(self) -> list[Rec]:
        return [r for records in self.live.values() for r in records.values()]

    def table(self, collection: str, key: str) -> set[tuple[str, str | None]]:
        """(uri, subject-ish field) of every live record of `collection`."""
        return {(r.uri, r.fields.get(key)) for r in self.all_live() if r.collection == collection}

    def post_agg(self) -> dict[str, tuple[int, int, int]]:
        likes = Counter(r.fields["subject"] for r in self.all_live() if r.collection == LIKE)
        reposts = Counter(r.fields["subject"] for r in self.all_live() if r.collection == REPOST)
        replies = Counter(r.fields.get("parent") for r in self.all_live() if r.collection == POST)
        keys = {k for k in set(likes) | set(reposts) | set(replies) if k is not None}
        return {k: (likes[k], reposts[k], replies[k]) for k in keys}

    def profile_agg(self) -> dict[str, tuple[int, int, int]]:
        follows = [r for r in self.all_live() if r.collection == FOLLOW]
        followers = Counter(r.fields["subject"] for r in follows)
        following = Counter(r.did for r in follows)
        posts = Counter(r.did for r in self.all_live() if r.collection == POST)
        keys = set(followers) | set(following) | set(posts)
        return {k: (followers[k], following[k], posts[k]) for k in keys}
