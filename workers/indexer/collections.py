"""Per-collection tables: how each is extracted from `record.json`, and the aggregates it feeds.

Extraction runs in PostgreSQL (jsonb operators over the rows the `record` merge just touched), so
a batch costs one set-based statement (deletes, inserts and aggregate upserts as data-modifying
CTEs) instead of one Python pass per record.
Required lexicon fields map to NOT NULL columns: a record missing one is rejected by PostgreSQL,
which makes it a permanent failure of that entry alone (see handler.py's bisection).

Aggregate deltas come only from the rows each statement actually deleted or inserted
(`RETURNING`), never from the events, so post_agg / profile_agg always equal COUNT(*).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

# Staging tables (see store.py): the record rows the current transaction changed, and the
# batch's operations (which hold the json of every live touched row).
TOUCHED = "_sf_touched"
OPS = "_sf_op"


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

    @property
    def name(self) -> str:
        """The table name without quotes, for CTE names."""
        return self.table.strip('"')

    def delete_cte(self) -> str:
        """`d_<name>`: delete this table's rows of the uris in `gone`, returning the delta keys."""
        return (
            f"d_{self.name} AS (DELETE FROM {self.table} t USING {_GONE} g "
            f"WHERE g.collection = '{self.nsid}' AND t.uri = g.uri RETURNING {self._keys('t.uri')})"
        )

    def insert_cte(self) -> str:
        """`i_<name>`: insert this collection's rows of `live`, returning the delta keys."""
        names = ", ".join(["uri", "cid", "creator", *self.columns])
        exprs = ", ".join(["uri", "cid", "did", *self.columns.values()])
        return (
            f"i_{self.name} AS (INSERT INTO {self.table} ({names}) SELECT {exprs} FROM {_LIVE} "
            f"WHERE collection = '{self.nsid}' RETURNING {self._keys('uri')})"
        )

    def delta_selects(self, cte: str, sign: int) -> list[str]:
        """One ±1 delta row per changed row and counter, read from the RETURNING of `cte`."""
        return [
            f"SELECT '{d.agg}', {d.key}, {sign} FROM {cte}_{self.name} WHERE {d.key} IS NOT NULL"
            for d in self.deltas
        ]

    def _keys(self, default: str) -> str:
        return ", ".join(sorted({d.key for d in self.deltas})) or default


def _s(path: str) -> str:
    """The text at a jsonb path like `reply.root.uri` (`#>>` walks it without copying the
    objects on the way, as a chain of `->` would)."""
    return f"(j->>'{path}')" if "." not in path else f"(j #>> '{{{path.replace('.', ',')}}}')"


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


# CTE names: the touched rows whose old per-collection row goes (every row that was there
# before: replaced or now a tombstone), the touched live rows with their json, the deltas.
_GONE = "gone"
_LIVE = "live"
_DELTAS = "deltas"
_GONE_CTE = f"{_GONE} AS MATERIALIZED (SELECT uri, collection FROM {TOUCHED} WHERE NOT fresh)"
# `live` is read by every insert, and its one-time filter first reads every delete to the end:
# so a uri's old row is gone before its new one goes in, whatever order PostgreSQL picks for
# the statement's data-modifying CTEs. In uri order, the primary key inserts walk the index
# one way instead of jumping about.
_LIVE_CTE = (
    f"{_LIVE} AS MATERIALIZED (SELECT o.uri, o.cid, o.did, o.collection, o.json AS j "
    f"FROM {TOUCHED} a JOIN {OPS} o ON o.uri = a.uri "
    "WHERE NOT a.tombstone AND (SELECT count(*) FROM ({}) d) >= 0 ORDER BY o.uri)"
)
_NO_DELTAS = "SELECT NULL, NULL, 0 WHERE false"


def aggregate_upsert(table: str) -> str:
    """Fold the `deltas` CTE into one aggregate table, in key order (a fixed lock order)."""
    key, counters = AGGREGATES[table]
    sums = ", ".join(f"coalesce(sum(n) FILTER (WHERE agg = '{c}'), 0)" for c in counters)
    nonzero = " OR ".join(f"coalesce(sum(n) FILTER (WHERE agg = '{c}'), 0) <> 0" for c in counters)
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counters)
    agg_list = ", ".join(f"'{c}'" for c in counters)
    return (
        f"INSERT INTO {table} ({key}, {', '.join(counters)}) "
        f"SELECT key, {sums} FROM {_DELTAS} WHERE agg IN ({agg_list}) "
        f"GROUP BY key HAVING {nonzero} ORDER BY key "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


def _with_aggregates(ctes: list[str], deltas: list[str]) -> str:
    """One statement: `ctes`, then the union of `deltas` folded into every aggregate table.

    The first aggregate is the main statement; the others are CTEs that nothing reads, which
    PostgreSQL runs after the main statement: the aggregate tables are locked in a fixed order."""
    main, *others = AGGREGATES
    upserts = [f"agg_{name} AS ({aggregate_upsert(name)})" for name in others]
    union = " UNION ALL ".join(deltas or [_NO_DELTAS])
    return f"WITH {', '.join([*ctes, f'{_DELTAS} (agg, key, n) AS ({union})', *upserts])} " + (
        aggregate_upsert(main)
    )


@functools.cache
def sync_collections_sql(nsids: frozenset[str] | None = None, *, inserts: bool = True) -> str:
    """One statement bringing the per-collection tables (of `nsids`, default all) and the
    aggregates in line with TOUCHED; without `inserts` when every touched row is a tombstone
    (marker sweeps). It must run after the statement that locked the touched `record` rows, so
    that its snapshot sees every committed change to them."""
    tables = [t for t in TABLES if nsids is None or t.nsid in nsids]
    if not tables:
        return ""
    ctes = [_GONE_CTE, *(t.delete_cte() for t in tables)]
    deltas = [s for t in tables for s in t.delta_selects("d", -1)]
    if inserts:
        deleted = " UNION ALL ".join(f"SELECT FROM d_{t.name}" for t in tables)
        ctes += [_LIVE_CTE.format(deleted), *(t.insert_cte() for t in tables)]
        deltas += [s for t in tables for s in t.delta_selects("i", +1)]
    return _with_aggregates(ctes, deltas)


COLLECTIONS: frozenset[str] = frozenset(t.nsid for t in TABLES)
