"""The tables that hold records, and the SQL that merges a batch's operations into them.

A record lives in exactly one row: the table of its collection (Bluesky appview model) or, for
collections without one, `record`. That row holds the record's gate state (rev, cid,
tombstone) and its content: the JSON and the columns read from it (posts, profiles, lists,
feed generators), or only the lexicon's fields, read in Python (likes, reposts, follows,
blocks, list items: the high-volume collections, see batch.py). A tombstone keeps the key and
rev, with NULL content. Every key starts with the repo's DID.

Applying a batch takes two statements per transaction (see store.py):

1. `merge_sql`: insert every operation that passes the repo's snapshot floor; on conflict move
   only the gate state (rev, cid) forward, where the gate passes. RETURNING goes to the staging
   table TOUCHED: each row's key, whether it was freshly inserted, and its tombstone flag and
   aggregate key as they stand now: the new ones for a fresh row, the old ones otherwise (the
   content was not touched). Content is not updated here, so a CHECK that ties content to the
   tombstone flag holds at every step.
2. `sync_sql`: for the rows that were there before (not fresh), write the new tombstone flag
   and content; then turn into ±1 deltas what was live before (from TOUCHED) and what is live
   now (fresh rows from TOUCHED, updated rows from the UPDATE's RETURNING), and fold them into
   post_agg, then profile_agg. It runs after statement 1 has locked every row it changed, so
   its snapshot sees every committed change to them, and nothing else can change them.

Aggregates therefore move only by rows that actually changed, and equal COUNT(*) of live rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

# Staging tables (store.py): the batch's operations, and the rows statement 1 changed.
OPS = "_sf_op"
TOUCHED = "_sf_touched"

LIKE_NSID = "app.bsky.feed.like"
REPOST_NSID = "app.bsky.feed.repost"
FOLLOW_NSID = "app.bsky.graph.follow"
BLOCK_NSID = "app.bsky.graph.block"
LIST_ITEM_NSID = "app.bsky.graph.listitem"


@dataclass(frozen=True)
class Delta:
    """One aggregate counter fed by a table: `agg` counts live rows by the `did` or `k1` key."""

    agg: str
    key: str  # "did" (the record's repo) or "k1" (the table's `k1` column)


@dataclass(frozen=True)
class RecordTable:
    """A table of records: `content` maps column -> SQL expression over a staged op `o`."""

    nsid: str
    table: str
    content: dict[str, str]
    k1: str | None = None
    deltas: tuple[Delta, ...] = ()

    @property
    def name(self) -> str:
        """The table name without quotes, for CTE names."""
        return self.table.strip('"')

    @property
    def generic(self) -> bool:
        """`record`: the table of every collection without one; its key includes the collection."""
        return self.nsid == ""

    @property
    def keys(self) -> tuple[str, ...]:
        return ("did", "collection", "rkey") if self.generic else ("did", "rkey")

    def collection_sql(self, alias: str) -> str:
        return f"{alias}.collection" if self.generic else f"'{self.nsid}'"

    def ops_filter(self, alias: str) -> str:
        """The staged ops that go to this table."""
        if self.generic:
            return f"{alias}.collection NOT IN ({', '.join(repr(n) for n in COLLECTIONS)})"
        return f"{alias}.collection = '{self.nsid}'"

    def k1_sql(self, alias: str) -> str:
        return f"{alias}.{self.k1}" if self.k1 else "NULL::text"


def _j(path: str) -> str:
    """The text at a jsonb path of the staged op, like `reply.root.uri` (`#>>` walks it without
    copying the objects on the way, as a chain of `->` would)."""
    return f"(o.json->>'{path}')" if "." not in path else f"(o.json #>> '{{{path.replace('.', ',')}}}')"


_JSON = {"json": "o.json"}
_CREATED_JSON = {"created_at": _j("createdAt")}
# Columns read in Python (batch.py) and staged as they are.
_SUBJECT = {"subject": "o.subject", "subject_cid": "o.subject_cid", "created_at": "o.created_at"}
_SUBJECT_DID = {"subject_did": "o.subject", "created_at": "o.created_at"}

RECORD = RecordTable("", "record", _JSON)
POST = RecordTable(
    "app.bsky.feed.post",
    "post",
    {
        **_JSON,
        "text": _j("text"),
        "reply_root": _j("reply.root.uri"),
        "reply_root_cid": _j("reply.root.cid"),
        "reply_parent": _j("reply.parent.uri"),
        "reply_parent_cid": _j("reply.parent.cid"),
        "embed_uri": f"coalesce({_j('embed.record.uri')}, {_j('embed.record.record.uri')})",
        "langs": "(o.json->'langs')",
        **_CREATED_JSON,
    },
    "reply_parent",
    (Delta("reply_count", "k1"), Delta("posts_count", "did")),
)
LIKE = RecordTable(LIKE_NSID, '"like"', _SUBJECT, "subject", (Delta("like_count", "k1"),))
REPOST = RecordTable(REPOST_NSID, "repost", _SUBJECT, "subject", (Delta("repost_count", "k1"),))
FOLLOW = RecordTable(
    FOLLOW_NSID,
    "follow",
    _SUBJECT_DID,
    "subject_did",
    (Delta("follows_count", "did"), Delta("followers_count", "k1")),
)
BLOCK = RecordTable(BLOCK_NSID, "actor_block", _SUBJECT_DID)
LIST_ITEM = RecordTable(
    LIST_ITEM_NSID,
    "list_item",
    {"subject_did": "o.subject", "list_uri": "o.ref", "created_at": "o.created_at"},
)
PROFILE = RecordTable(
    "app.bsky.actor.profile",
    "profile",
    {
        **_JSON,
        "display_name": _j("displayName"),
        "description": _j("description"),
        "avatar_cid": _j("avatar.ref.$link"),
        "banner_cid": _j("banner.ref.$link"),
        **_CREATED_JSON,
    },
)
LIST = RecordTable(
    "app.bsky.graph.list",
    "list",
    {
        **_JSON,
        "name": _j("name"),
        "purpose": _j("purpose"),
        "description": _j("description"),
        "avatar_cid": _j("avatar.ref.$link"),
        **_CREATED_JSON,
    },
)
FEED_GENERATOR = RecordTable(
    "app.bsky.feed.generator",
    "feed_generator",
    {
        **_JSON,
        "feed_did": _j("did"),
        "display_name": _j("displayName"),
        "description": _j("description"),
        "avatar_cid": _j("avatar.ref.$link"),
        **_CREATED_JSON,
    },
)

# The tables of the collections that have one; `record` takes the rest.
TABLES: tuple[RecordTable, ...] = (
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
ALL_TABLES: tuple[RecordTable, ...] = (RECORD, *TABLES)
COLLECTIONS: frozenset[str] = frozenset(t.nsid for t in TABLES)
# Collections whose fields are read in Python and staged in columns, without their JSON.
LEAN: frozenset[str] = frozenset((LIKE_NSID, REPOST_NSID, FOLLOW_NSID, BLOCK_NSID, LIST_ITEM_NSID))

# Aggregate table -> (key column, counter columns fed by `Delta.agg`).
AGGREGATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "post_agg": ("uri", ("like_count", "repost_count", "reply_count")),
    "profile_agg": ("did", ("followers_count", "follows_count", "posts_count")),
}

# The gate: a newer rev wins; at equal rev a live write replaces a tombstone (or another cid).
_GATE = (
    "t.rev < excluded.rev OR (t.rev = excluded.rev AND NOT excluded.tombstone "
    "AND (t.tombstone OR t.cid IS DISTINCT FROM excluded.cid))"
)
# Ops older than the repo's completed snapshot are dropped: that snapshot already holds the
# record at its own rev, or the record was gone by then. Deletes always go through.
_FLOORED = (
    f"floored AS MATERIALIZED (SELECT o.* FROM {OPS} o LEFT JOIN actor_sync s ON s.did = o.did "
    "WHERE o.tombstone OR s.repo_rev IS NULL OR o.rev >= s.repo_rev)"
)


def _merge_cte(t: RecordTable) -> str:
    """`m_<name>`: statement 1 for one table. `xmax = 0` marks a row this statement inserted."""
    keys = ", ".join(t.keys)
    cols = ", ".join([*t.keys, "rev", "cid", "tombstone", *t.content])
    exprs = ", ".join([*(f"o.{k}" for k in t.keys), "o.rev", "o.cid", "o.tombstone", *t.content.values()])
    order = ", ".join(f"o.{k}" for k in t.keys)
    return (
        f"m_{t.name} AS (INSERT INTO {t.table} AS t ({cols}) SELECT {exprs} FROM floored o "
        f"WHERE {t.ops_filter('o')} ORDER BY {order} "
        f"ON CONFLICT ({keys}) DO UPDATE SET rev = excluded.rev, cid = excluded.cid, indexed_at = now() "
        f"WHERE {_GATE} "
        f"RETURNING t.did, {t.collection_sql('t')}, t.rkey, t.xmax = 0 AS fresh, t.tombstone, "
        f"{t.k1_sql('t')})"
    )


def _tables(nsids: frozenset[str] | None, generic: bool) -> list[RecordTable]:
    """The tables of `nsids` (None: all of them), and `record` when `generic`."""
    return [t for t in ALL_TABLES if (generic if t.generic else nsids is None or t.nsid in nsids)]


# Undo rows (migration 0003): what a campaign's snapshot changed, as it was before.
UNDO = "campaign_undo"
UNDO_ON = "campaign_undo_on"
_UNDO_COLUMNS = "(campaign, tbl, did, collection, rkey, campaign_rev, prior)"


def undo_lock_sql(nsids: frozenset[str], generic: bool) -> str:
    """Lock, before statement 1, the existing rows that ops of undo-keeping campaigns may change:
    statement 1's snapshot (taken after) then holds their newest committed version, which no
    other transaction can change before this one commits."""
    out = []
    for t in _tables(nsids, generic):
        match = " AND ".join(f"p.{k} = o.{k}" for k in t.keys)
        order = ", ".join(f"p.{k}" for k in t.keys)
        out.append(
            f"SELECT count(*) FROM (SELECT 1 FROM {OPS} o JOIN {UNDO_ON} c ON c.campaign = o.campaign "
            f"JOIN {t.table} p ON {match} WHERE {t.ops_filter('o')} ORDER BY {order} FOR UPDATE OF p) x"
        )
    return ";\n".join(out)


def _undo_cte(t: RecordTable) -> str:
    """`pu_<name>`: for the rows statement 1 changed through an op of a campaign that keeps undo
    rows, the row as it was (all CTEs of a statement read the same snapshot: from before it; the
    rows were locked by `undo_lock_sql`). A row found absent that the merge did not insert was
    inserted concurrently: its prior state is unknown, so no undo row is kept (rollback leaves it)."""
    match = " AND ".join(f"p.{k} = o.{k}" for k in t.keys)
    changed = " AND ".join(f"r.{k} = o.{k}" for k in t.keys)
    return (
        f"pu_{t.name} AS (INSERT INTO {UNDO} {_UNDO_COLUMNS} "
        f"SELECT o.campaign, '{t.name}', o.did, {t.collection_sql('o')}, o.rkey, o.rev, to_jsonb(p) "
        f"FROM floored o JOIN {UNDO_ON} c ON c.campaign = o.campaign "
        f"JOIN m_{t.name} AS r(did, collection, rkey, fresh, tombstone, k1) ON {changed} "
        f"LEFT JOIN {t.table} p ON {match} WHERE {t.ops_filter('o')} AND (p.did IS NOT NULL OR r.fresh) "
        "ON CONFLICT DO NOTHING)"
    )


@functools.cache
def merge_sql(nsids: frozenset[str], generic: bool, undo: bool = False) -> str:
    """Statement 1 for a batch whose ops are of the collections `nsids` (those with a table)
    and, when `generic`, of others; `undo` when some op carries a campaign tag."""
    tables = _tables(nsids, generic)
    # A fresh row of a table without aggregates needs nothing more: it is not staged.
    union = " UNION ALL ".join(
        f"SELECT * FROM m_{t.name}" + ("" if t.deltas else " WHERE NOT fresh") for t in tables
    )
    ctes = [_FLOORED, *map(_merge_cte, tables), *(map(_undo_cte, tables) if undo else ())]
    return f"WITH {', '.join(ctes)} INSERT INTO {TOUCHED} {union}"


def _update_cte(t: RecordTable) -> str:
    """`u_<name>`: statement 2's write of the new tombstone flag and content of rows that were
    there before; an op that is a delete stages NULL content."""
    sets = ", ".join(["tombstone = o.tombstone", *(f"{c} = {e}" for c, e in t.content.items())])
    match = " AND ".join(f"t.{k} = o.{k}" for k in t.keys)
    return (
        f"u_{t.name} AS (UPDATE {t.table} t SET {sets}, indexed_at = now() FROM changed o "
        f"WHERE {t.ops_filter('o')} AND {match} "
        f"RETURNING t.did, {t.collection_sql('t')}, t.tombstone, {t.k1_sql('t')})"
    )


# The ops of the rows that were there before: usually few (updates and deletes).
_CHANGED = (
    f"changed AS MATERIALIZED (SELECT o.* FROM {OPS} o WHERE (o.did, o.collection, o.rkey) IN "
    f"(SELECT did, collection, rkey FROM {TOUCHED} WHERE NOT fresh))"
)


def _delta_specs() -> str:
    rows = ", ".join(f"('{t.nsid}', '{d.agg}', '{d.key}')" for t in TABLES for d in t.deltas)
    return f"specs (collection, agg, key) AS (VALUES {rows})"


def _deltas(tables: list[RecordTable]) -> str:
    """The ±1 deltas: rows live before (-1, from TOUCHED unless fresh), rows live now (+1: fresh
    rows from TOUCHED, updated rows from the UPDATEs)."""
    updated = " UNION ALL ".join(
        f"SELECT collection, did, k1 FROM u_{t.name} AS u(did, collection, tombstone, k1) WHERE NOT tombstone"
        for t in tables
        if t.deltas
    )
    now_live = f"SELECT collection, did, k1, 1 AS n FROM ({updated}) u" if updated else ""
    before = (
        f"SELECT collection, did, k1, CASE WHEN fresh THEN 1 ELSE -1 END FROM {TOUCHED} WHERE NOT tombstone"
    )
    source = " UNION ALL ".join(s for s in (before, now_live) if s)
    return (
        "deltas (agg, key, n) AS (SELECT s.agg, CASE s.key WHEN 'did' THEN d.did ELSE d.k1 END, d.n "
        f"FROM ({source}) AS d(collection, did, k1, n) JOIN specs s ON s.collection = d.collection "
        "WHERE (CASE s.key WHEN 'did' THEN d.did ELSE d.k1 END) IS NOT NULL)"
    )


def aggregate_upsert(table: str) -> str:
    """Fold the `deltas` CTE into one aggregate table, in key order (a fixed lock order)."""
    key, counters = AGGREGATES[table]
    sums = ", ".join(f"coalesce(sum(n) FILTER (WHERE agg = '{c}'), 0)" for c in counters)
    nonzero = " OR ".join(f"coalesce(sum(n) FILTER (WHERE agg = '{c}'), 0) <> 0" for c in counters)
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counters)
    agg_list = ", ".join(f"'{c}'" for c in counters)
    return (
        f"INSERT INTO {table} ({key}, {', '.join(counters)}) "
        f"SELECT key, {sums} FROM deltas WHERE agg IN ({agg_list}) "
        f"GROUP BY key HAVING {nonzero} ORDER BY key "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


@functools.cache
def sync_sql(nsids: frozenset[str] | None = None, generic: bool = True) -> str:
    """Statement 2, for the tables of `nsids` (default: every table) and `record` when
    `generic`. The first aggregate is the main statement; the other is a CTE that nothing reads,
    which PostgreSQL runs after the main statement: the aggregate tables are locked in a fixed
    order."""
    tables = _tables(nsids, generic)
    main, *others = AGGREGATES
    ctes = [_CHANGED, *map(_update_cte, tables), _delta_specs(), _deltas(tables)]
    ctes += [f"agg_{name} AS ({aggregate_upsert(name)})" for name in others]
    return f"WITH {', '.join(ctes)} {aggregate_upsert(main)}"


def _sweep_cte(t: RecordTable) -> str:
    """`s_<name>`: a marker's sweep of one table; the self-join `p` reads the old aggregate key
    (no other transaction can change these rows: the marker holds its repos' exclusive lock)."""
    nulls = ", ".join(f"{c} = NULL" for c in t.content)
    match = " AND ".join(f"p.{k} = t.{k}" for k in t.keys)
    return (
        f"s_{t.name} AS (UPDATE {t.table} t SET tombstone = true, rev = m.rev, cid = NULL, {nulls}, "
        f"indexed_at = now() FROM m, {t.table} p "
        f"WHERE p.did = m.did AND NOT p.tombstone AND p.rev < m.rev AND {match} "
        f"RETURNING t.did, {t.collection_sql('t')}, t.rkey, false, false, {t.k1_sql('p')})"
    )


def _sweep_undo_cte(t: RecordTable) -> str:
    """`su_<name>`: the rows a campaign's marker sweeps (same predicate, same snapshot), as they were."""
    return (
        f"su_{t.name} AS (INSERT INTO {UNDO} {_UNDO_COLUMNS} "
        f"SELECT m.campaign, '{t.name}', p.did, {t.collection_sql('p')}, p.rkey, m.rev, to_jsonb(p) "
        f"FROM m JOIN {UNDO_ON} c ON c.campaign = m.campaign JOIN {t.table} p ON p.did = m.did "
        "WHERE NOT p.tombstone AND p.rev < m.rev ON CONFLICT DO NOTHING)"
    )


# The actor_sync row a campaign's marker raises, as it was (NULL: none).
_SYNC_UNDO = (
    f"su_actor_sync AS (INSERT INTO {UNDO} {_UNDO_COLUMNS} "
    "SELECT m.campaign, 'actor_sync', m.did, '', '', m.rev, to_jsonb(s) "
    f"FROM m JOIN {UNDO_ON} c ON c.campaign = m.campaign LEFT JOIN actor_sync s ON s.did = m.did "
    "WHERE s.repo_rev IS NULL OR s.repo_rev < m.rev ON CONFLICT DO NOTHING)"
)


def sweep_sql(undo: bool = False) -> str:
    """A marker's sweep of every table, into TOUCHED (then `sync_sql()` folds the deltas): `m`
    is a CTE of (did, rev, commit_cid, campaign) the caller defines first; `undo` keeps the undo
    rows of campaign markers."""
    union = " UNION ALL ".join(f"SELECT * FROM s_{t.name}" for t in ALL_TABLES)
    ctes = [*map(_sweep_cte, ALL_TABLES)]
    if undo:
        ctes += [*map(_sweep_undo_cte, ALL_TABLES), _SYNC_UNDO]
    return f"{', '.join(ctes)} INSERT INTO {TOUCHED} {union}"


def live_records_sql() -> str:
    """Every live record as (did, collection, rkey, cid, rev), whichever table holds it."""
    return " UNION ALL ".join(
        f"SELECT did, {t.collection_sql('t')} AS collection, rkey, cid, rev FROM {t.table} t "
        "WHERE NOT tombstone"
        for t in ALL_TABLES
    )


def tombstones_sql() -> str:
    """The number of tombstones in every table."""
    counts = " + ".join(f"(SELECT count(*) FROM {t.table} WHERE tombstone)" for t in ALL_TABLES)
    return f"SELECT {counts}"
