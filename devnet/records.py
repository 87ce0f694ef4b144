"""Realistic app.bsky record bodies, generated from a seeded RNG.

Bodies follow the lexicons: posts have `text` and `createdAt` and sometimes a `reply` of strong
refs; likes and reposts point at posts that exist; follows and blocks name DIDs; list items point
at a list of the same account; profiles use rkey `self`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["COLLECTIONS", "RecordContext", "make_record", "pick_collection"]

POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
REPOST = "app.bsky.feed.repost"
FOLLOW = "app.bsky.graph.follow"
BLOCK = "app.bsky.graph.block"
PROFILE = "app.bsky.actor.profile"
LIST = "app.bsky.graph.list"
LISTITEM = "app.bsky.graph.listitem"
GENERATOR = "app.bsky.feed.generator"

# Relative frequencies close to the public network: likes dominate, then follows and posts.
_WEIGHTS: dict[str, int] = {
    LIKE: 45,
    FOLLOW: 20,
    POST: 18,
    REPOST: 9,
    BLOCK: 2,
    LISTITEM: 3,
    LIST: 1,
    GENERATOR: 1,
}
COLLECTIONS: tuple[str, ...] = (*_WEIGHTS, PROFILE)
_KINDS = tuple(_WEIGHTS)
_CUM_WEIGHTS = tuple(sum(list(_WEIGHTS.values())[: i + 1]) for i in range(len(_WEIGHTS)))

_WORDS = (
    "the a relay firehose repo commit merkle tree post like feed sky blue network protocol "
    "morning coffee cat dog garden rain sunset music book code python rust test hello world "
    "today tomorrow weekend friends photo walk river city train late early new old"
).split()
_LANGS = (["en"], ["en"], ["en"], ["ja"], ["pt"], ["de"])
_LIST_PURPOSES = ("app.bsky.graph.defs#curatelist", "app.bsky.graph.defs#modlist")


@dataclass(slots=True)
class RecordContext:
    """What a record may refer to: other accounts, existing posts, this account's lists."""

    rng: random.Random
    created_at: str
    dids: Sequence[str]
    posts: Sequence[tuple[str, str]]  # (uri, cid)
    own_lists: Sequence[str]  # at:// URIs


def pick_collection(rng: random.Random, *, has_lists: bool) -> str:
    """A collection for a new record, weighted like real traffic."""
    collection = rng.choices(_KINDS, cum_weights=_CUM_WEIGHTS)[0]
    if collection == LISTITEM and not has_lists:
        return LIST
    return collection


def _text(rng: random.Random, lo: int = 3, hi: int = 30) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(lo, hi))).capitalize()


def _strong_ref(ctx: RecordContext) -> dict[str, str] | None:
    if not ctx.posts:
        return None
    uri, cid = ctx.posts[ctx.rng.randrange(len(ctx.posts))]
    return {"uri": uri, "cid": cid}


def _post(ctx: RecordContext) -> dict[str, Any]:
    record: dict[str, Any] = {"$type": POST, "text": _text(ctx.rng), "createdAt": ctx.created_at}
    record["langs"] = ctx.rng.choice(_LANGS)
    parent = _strong_ref(ctx) if ctx.rng.random() < 0.3 else None
    if parent is not None:
        # Root and parent coincide for a direct reply; deep threads are not needed for backfill tests.
        record["reply"] = {"root": parent, "parent": parent}
    return record


def _subject_post(kind: str) -> Callable[[RecordContext], dict[str, Any] | None]:
    def make(ctx: RecordContext) -> dict[str, Any] | None:
        ref = _strong_ref(ctx)
        return None if ref is None else {"$type": kind, "subject": ref, "createdAt": ctx.created_at}

    return make


def _subject_did(kind: str) -> Callable[[RecordContext], dict[str, Any] | None]:
    def make(ctx: RecordContext) -> dict[str, Any] | None:
        subject = ctx.rng.choice(ctx.dids) if ctx.dids else None
        return None if subject is None else {"$type": kind, "subject": subject, "createdAt": ctx.created_at}

    return make


def _profile(ctx: RecordContext) -> dict[str, Any]:
    return {
        "$type": PROFILE,
        "displayName": _text(ctx.rng, 1, 3)[:64],
        "description": _text(ctx.rng, 5, 20),
        "createdAt": ctx.created_at,
    }


def _list(ctx: RecordContext) -> dict[str, Any]:
    return {
        "$type": LIST,
        "name": _text(ctx.rng, 1, 4)[:64],
        "purpose": ctx.rng.choice(_LIST_PURPOSES),
        "description": _text(ctx.rng, 3, 12),
        "createdAt": ctx.created_at,
    }


def _listitem(ctx: RecordContext) -> dict[str, Any] | None:
    if not ctx.own_lists or not ctx.dids:
        return None
    return {
        "$type": LISTITEM,
        "subject": ctx.rng.choice(ctx.dids),
        "list": ctx.rng.choice(ctx.own_lists),
        "createdAt": ctx.created_at,
    }


def _generator(ctx: RecordContext) -> dict[str, Any]:
    return {
        "$type": GENERATOR,
        "did": "did:web:feeds.devnet.test",
        "displayName": _text(ctx.rng, 1, 3)[:24],
        "description": _text(ctx.rng, 3, 15),
        "createdAt": ctx.created_at,
    }


_MAKERS: dict[str, Callable[[RecordContext], dict[str, Any] | None]] = {
    POST: _post,
    LIKE: _subject_post(LIKE),
    REPOST: _subject_post(REPOST),
    FOLLOW: _subject_did(FOLLOW),
    BLOCK: _subject_did(BLOCK),
    PROFILE: _profile,
    LIST: _list,
    LISTITEM: _listitem,
    GENERATOR: _generator,
}


def make_record(collection: str, ctx: RecordContext) -> dict[str, Any]:
    """A record body for `collection`; falls back to a post when it has nothing to point at."""
    record = _MAKERS[collection](ctx)
    return record if record is not None else _post(ctx)
