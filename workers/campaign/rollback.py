"""`campaign rollback`: put back the rows an --undo campaign changed, except those live events
changed since, and recount the aggregates those rows feed.

The indexer kept, in the same transaction as each change, the row as it was before the campaign
(`campaign_undo`, migration 0003) and the rev the campaign wrote. A row still at that rev holds
the campaign's write: it is restored (deleted when there was no row before). A row at a newer
rev was changed by a live event (or a later snapshot) since: it stays, and is listed. Every
restore is guarded by the rev in SQL, so rollback.sql can be reviewed and run later, and running
it (or `rollback`) again changes nothing more.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.campaign.state import (
    ABORTED,
    AWAITING,
    COMPLETED,
    PAUSED,
    REJECTED,
    ROLLED_BACK,
    Campaign,
    CampaignError,
    CampaignStore,
)
from workers.indexer.collections import AGGREGATES, ALL_TABLES, TABLES, UNDO
from workers.indexer.store import lock_repos_sql
from workers.indexer.verify import aggregates_match

# table name (as in campaign_undo.tbl) -> (SQL name, key columns, rev column)
_TABLES: dict[str, tuple[str, tuple[str, ...], str]] = {
    t.name: (t.table, t.keys, "rev") for t in ALL_TABLES
} | {"actor_sync": ("actor_sync", ("did",), "repo_rev")}
_ALLOWED = frozenset({COMPLETED, REJECTED, ABORTED, AWAITING, PAUSED, ROLLED_BACK})


@dataclass(frozen=True)
class UndoRow:
    tbl: str
    did: str
    collection: str
    rkey: str
    campaign_rev: str
    prior: dict[str, Any] | None
    current: dict[str, Any] | None

    @property
    def current_rev(self) -> str | None:
        return None if self.current is None else self.current[_TABLES[self.tbl][2]]

    @property
    def uri(self) -> str:
        return f"at://{self.did}/{self.collection}/{self.rkey}" if self.rkey else f"{self.tbl} {self.did}"


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def undo_rows(conn: Any, name: str) -> list[UndoRow]:
    """Every undo row of a campaign, with the row as it stands now."""
    out: list[UndoRow] = []
    for tbl, (table, keys, _) in _TABLES.items():
        match = " AND ".join(f"t.{k} = u.{k}" for k in keys)
        rows = await conn.fetch(
            f"SELECT u.did, u.collection, u.rkey, u.campaign_rev, u.prior::text, to_jsonb(t)::text "
            f"FROM {UNDO} u LEFT JOIN {table} t ON {match} WHERE u.campaign = $1 AND u.tbl = $2 "
            "ORDER BY u.did, u.collection, u.rkey",
            name,
            tbl,
        )
        for did, collection, rkey, rev, prior, current in rows:
            out.append(
                UndoRow(
                    tbl,
                    did,
                    collection,
                    rkey,
                    rev,
                    json.loads(prior) if prior else None,
                    json.loads(current) if current else None,
                )
            )
    return out


def restore_sql(row: UndoRow) -> str:
    """The guarded restore of one row: only while it still holds the campaign's write."""
    table, keys, rev = _TABLES[row.tbl]
    where = " AND ".join(f"{k} = {_lit(getattr(row, k))}" for k in keys)
    delete = f"DELETE FROM {table} WHERE {where} AND {rev} = {_lit(row.campaign_rev)}"
    if row.prior is None:
        return delete + ";"
    prior = _lit(json.dumps(row.prior))
    return (
        f"WITH d AS ({delete} RETURNING 1) INSERT INTO {table} "
        f"SELECT * FROM jsonb_populate_record(NULL::{table}, {prior}::jsonb) WHERE EXISTS (SELECT FROM d);"
    )


def _agg_keys(rows: list[UndoRow]) -> dict[str, set[str]]:
    """Aggregate table -> the keys whose counters the restored rows feed (before and now)."""
    keys: dict[str, set[str]] = {agg: set() for agg in AGGREGATES}
    by_name = {t.name: t for t in TABLES}
    for row in rows:
        t = by_name.get(row.tbl)
        if t is None:
            continue
        for version in (row.prior, row.current):
            for delta in t.deltas if version else ():
                assert version is not None
                value = version["did"] if delta.key == "did" else version.get(t.k1 or "")
                agg = next(a for a, (_, counters) in AGGREGATES.items() if delta.agg in counters)
                if value:
                    keys[agg].add(value)
    return keys


def recount_sql(agg: str, keys: set[str]) -> str:
    """Recount one aggregate table's rows for `keys` from the live rows."""
    key, counters = AGGREGATES[agg]
    wanted = "ARRAY[" + ", ".join(map(_lit, sorted(keys))) + "]::text[]"
    parts = []
    for t in TABLES:
        for d in t.deltas:
            if d.agg in counters:
                expr = "did" if d.key == "did" else str(t.k1)
                ones = ", ".join("1" if c == d.agg else "0" for c in counters)
                parts.append(
                    f"SELECT {expr}, {ones} FROM {t.table} WHERE NOT tombstone AND {expr} = ANY({wanted})"
                )
    sums = ", ".join(f"sum({c})" for c in counters)
    return (
        f"DELETE FROM {agg} WHERE {key} = ANY({wanted});\n"
        f"INSERT INTO {agg} ({key}, {', '.join(counters)}) SELECT k, {sums} FROM ("
        + " UNION ALL ".join(parts)
        + f") x(k, {', '.join(counters)}) GROUP BY k;"
    )


def checks(name: str) -> list[tuple[str, str]]:
    """(what, query) pairs that verify a rollback; each query returns one number."""
    held, live = [], []
    for tbl, (table, keys, rev) in _TABLES.items():
        match = " AND ".join(f"t.{k} = u.{k}" for k in keys)
        base = (
            f"FROM {UNDO} u JOIN {table} t ON {match} WHERE u.campaign = {_lit(name)} AND u.tbl = {_lit(tbl)}"
        )
        held.append(
            f"(SELECT count(*) {base} AND t.{rev} = u.campaign_rev "
            f"AND (u.prior IS NULL OR u.prior->>'{rev}' IS DISTINCT FROM u.campaign_rev))"
        )
        live.append(f"(SELECT count(*) {base} AND t.{rev} > u.campaign_rev)")
    return [
        ("undo rows kept for the campaign", f"SELECT count(*) FROM {UNDO} WHERE campaign = {_lit(name)}"),
        ("rows still holding the campaign's write (expect 0)", "SELECT " + " + ".join(held)),
        ("rows live events changed since (left as they are)", "SELECT " + " + ".join(live)),
    ]


async def rollback(store: CampaignStore, conn: Any, campaign: Campaign, out: Path | None) -> int:
    """Restore, write rollback.sql, verify, audit; 0 when the checks pass."""
    if not campaign.undo:
        raise CampaignError(f"campaign {campaign.name!r} was not planned with --undo: it has no undo rows")
    if campaign.state not in _ALLOWED:
        raise CampaignError(
            f"campaign {campaign.name!r} is {campaign.state}: pause, reject or abort it first"
        )
    rows = await undo_rows(conn, campaign.name)
    restore = [r for r in rows if r.current is not None and r.current_rev == r.campaign_rev]
    kept = [r for r in rows if r.current_rev is not None and r.current_rev > r.campaign_rev]
    statements = [restore_sql(r) for r in restore]
    statements += [recount_sql(agg, keys) for agg, keys in _agg_keys(restore).items() if keys]
    path = (out or Path(campaign.out_dir)) / "rollback.sql"
    _write_sql(path, campaign.name, restore, kept, statements)
    if statements:
        async with conn.transaction():
            await conn.execute(lock_repos_sql({r.did for r in restore}, exclusive=True))
            await conn.execute("\n".join(statements))
    ok = await _report(conn, campaign.name, restore, kept)
    await store.transition(
        campaign.name,
        _ALLOWED,
        "rollback",
        state=ROLLED_BACK,
        rollback={"restored": len(restore), "kept": len(kept), "sql": str(path), "at": round(time.time(), 3)},
    )
    return 0 if ok else 1


def _write_sql(
    path: Path, name: str, restore: list[UndoRow], kept: list[UndoRow], statements: list[str]
) -> None:
    lines = [
        f"-- rollback of campaign {name}: {len(restore)} rows restored, "
        f"{len(kept)} left as live events changed them",
        *(f"-- kept (changed since): {r.uri} at {r.current_rev}" for r in kept),
        "BEGIN;",
        *statements,
        "COMMIT;",
        "-- verification:",
        *(f"-- {what}: {sql};" for what, sql in checks(name)),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


async def _report(conn: Any, name: str, restore: list[UndoRow], kept: list[UndoRow]) -> bool:
    print(f"campaign {name}: {len(restore)} rows restored; {len(kept)} rows left as live events changed them")
    for r in kept:
        print(f"  kept: {r.uri} (now at {r.current_rev}, the campaign wrote {r.campaign_rev})")
    ok = True
    for what, sql in checks(name):
        value = await conn.fetchval(sql)
        print(f"  {what}: {value}\n    {sql}")
        ok = ok and not (what.endswith("(expect 0)") and value)
    aggregates = await aggregates_match(conn)
    print(f"  aggregates equal a recount of the live rows: {aggregates}")
    return ok and aggregates
