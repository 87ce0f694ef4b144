"""Per-collection tables: how each is extracted from `record.json`, and the aggregates it feeds.

Extraction runs in PostgreSQL (jsonb operators over the rows the `record` merge just touched), so
a batch costs a fixed number of set-based statements instead of one Python pass per record.
Required lexicon fields map to NOT NULL columns: a record missing one is rejected by PostgreSQL,
which makes it a permanent failure of that entry alone (see handler.py's bisection).

Aggregate deltas come only from the rows each statement actually deleted or inserted
(`RETURNING`), never from the events, so post_agg / profile_agg always equal COUNT(*).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

# Staging tables (see store.py): the record rows the current transaction changed, the batch's
# operations (which hold the json of every live touched row), and the aggregate deltas.
TOUCHED = "_sf_touched"
OPS = "_sf_op"
DELTA = "_sf_delta"


@dataclass(frozen=True)
class Delta:
    """One aggregate counter fed by a per-collection table: `agg` counts rows by `key` column."""

    agg: str
    key: str


@dataclass(frozen=True)
class CollectionTable:
    """A per-collection table: `columns` maps column -> SQL expression over `j` (the record json)."""

    nsid: str
    table: str
    columns: dict[str, str]
    deltas: tuple[Delta, ...] = ()

    def delete_sql(self) -> str:
        """Delete this table's rows for every touched uri; deltas of -1 for the removed rows."""
        delete = (
            f"DELETE FROM {self.table} t USING {TOUCHED} a "
            f"WHERE a.collection = '{self.nsid}' AND NOT a.fresh AND t.uri = a.uri"
        )
        return _with_deltas(delete, self.deltas, -1)

    def insert_sql(self) -> str:
        """Insert the live touched records of this collection; deltas of +1 for the new rows."""
        names = ", ".join(["uri", "cid", "creator", *self.columns])
        exprs = ", ".join(["o.uri", "o.cid", "o.did", *self.columns.values()])
        insert = (
            f"INSERT INTO {self.table} ({names}) SELECT {exprs} FROM {TOUCHED} a "
            f"JOIN {OPS} o ON o.uri = a.uri, LATERAL (SELECT o.json AS j) x "
            f"WHERE a.collection = '{self.nsid}' AND NOT a.tombstone"
        )
        return _with_deltas(insert, self.deltas, +1)


def _with_deltas(statement: str, deltas: tuple[Delta, ...], sign: int) -> str:
    if not deltas:
        return statement
    keys = ", ".join(sorted({d.key for d in deltas}))
    selects = " UNION ALL ".join(
        f"SELECT '{d.agg}', {d.key}, {sign} FROM changed WHERE {d.key} IS NOT NULL" for d in deltas
    )
    return f"WITH changed AS ({statement} RETURNING {keys}) INSERT INTO {DELTA} (agg, key, n) {selects}"


def _s(path: str) -> str:
    """The text at a jsonb path like `reply.root.uri`."""
    parts = path.split(".")
    head = "".join(f"->'{p}'" for p in parts[:-1])
    return f"(j{head}->>'{parts[-1]}')"


_CREATED = {"created_at": _s("createdAt")}

POST = CollectionTable(
    "app.bsky.feed.post",
    "post",
    {
        "text": _s("text"),
        "reply_root": _s("reply.root.uri"),
        "reply_root_cid": _s("reply.root.cid"),
        "reply_parent": _s("reply.parent.uri"),
        "reply_parent_cid": _s("reply.parent.cid"),
        "embed_uri": f"coalesce({_s('embed.record.uri')}, {_s('embed.record.record.uri')})",
        "langs": "(j->'langs')",
        **_CREATED,
    },
    (Delta("reply_count", "reply_parent"), Delta("posts_count", "creator")),
)
LIKE = CollectionTable(
    "app.bsky.feed.like",
    '"like"',
    {"subject": _s("subject.uri"), "subject_cid": _s("subject.cid"), **_CREATED},
    (Delta("like_count", "subject"),),
)
REPOST = CollectionTable(
    "app.bsky.feed.repost",
    "repost",
    {"subject": _s("subject.uri"), "subject_cid": _s("subject.cid"), **_CREATED},
    (Delta("repost_count", "subject"),),
)
FOLLOW = CollectionTable(
    "app.bsky.graph.follow",
    "follow",
    {"subject_did": _s("subject"), **_CREATED},
    (Delta("follows_count", "creator"), Delta("followers_count", "subject_did")),
)
BLOCK = CollectionTable("app.bsky.graph.block", "actor_block", {"subject_did": _s("subject"), **_CREATED})
PROFILE = CollectionTable(
    "app.bsky.actor.profile",
    "profile",
    {
        "display_name": _s("displayName"),
        "description": _s("description"),
        "avatar_cid": _s("avatar.ref.$link"),
        "banner_cid": _s("banner.ref.$link"),
        **_CREATED,
    },
)
LIST = CollectionTable(
    "app.bsky.graph.list",
    "list",
    {
        "name": _s("name"),
        "purpose": _s("purpose"),
        "description": _s("description"),
        "avatar_cid": _s("avatar.ref.$link"),
        **_CREATED,
    },
)
LIST_ITEM = CollectionTable(
    "app.bsky.graph.listitem",
    "list_item",
    {"subject_did": _s("subject"), "list_uri": _s("list"), **_CREATED},
)
FEED_GENERATOR = CollectionTable(
    "app.bsky.feed.generator",
    "feed_generator",
    {
        "feed_did": _s("did"),
        "display_name": _s("displayName"),
        "description": _s("description"),
        "avatar_cid": _s("avatar.ref.$link"),
        **_CREATED,
    },
)

TABLES: tuple[CollectionTable, ...] = (
    POST,
    LIKE,
    REPOST,
    FOLLOW,
    BLOCK,
    PROFILE,
    LIST,
    LIST_ITEM,
    FEED_GENERATOR,
)

# Aggregate table -> (key column, counter columns fed by `Delta.agg`).
AGGREGATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "post_agg": ("uri", ("like_count", "repost_count", "reply_count")),
    "profile_agg": ("did", ("followers_count", "follows_count", "posts_count")),
}


def aggregate_sql(table: str) -> str:
    """Fold the staged deltas into one aggregate table, in key order (a fixed lock order)."""
    key, counters = AGGREGATES[table]
    sums = ", ".join(f"coalesce(sum(n) FILTER (WHERE agg = '{c}'), 0)" for c in counters)
    nonzero = " OR ".join(f"coalesce(sum(n) FILTER (WHERE agg = '{c}'), 0) <> 0" for c in counters)
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counters)
    agg_list = ", ".join(f"'{c}'" for c in counters)
    return (
        f"INSERT INTO {table} ({key}, {', '.join(counters)}) "
        f"SELECT key, {sums} FROM {DELTA} WHERE agg IN ({agg_list}) "
        f"GROUP BY key HAVING {nonzero} ORDER BY key "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


@functools.cache
def sync_collections_sql(nsids: frozenset[str] | None = None, *, inserts: bool = True) -> str:
    """Statements bringing the per-collection tables (of `nsids`, default all) and the aggregates
    in line with TOUCHED; without `inserts` when every touched row is a tombstone (marker sweeps)."""
    tables = [t for t in TABLES if nsids is None or t.nsid in nsids]
    statements = [t.delete_sql() for t in tables]
    if inserts:
        statements += [t.insert_sql() for t in tables]
    statements += [aggregate_sql(name) for name in AGGREGATES]
    return ";\n".join(statements)


COLLECTIONS: frozenset[str] = frozenset(t.nsid for t in TABLES)
