"""Reading the indexer's tables in tests: a record's row wherever its collection keeps it."""

from __future__ import annotations

from typing import Any

from workers.indexer.collections import RECORD, TABLES, live_records_sql

_BY_NSID = {t.nsid: t for t in TABLES}


async def record_row(pool: Any, uri: str, columns: str = "*") -> Any:
    """The row of the record at `uri` (live or tombstone), or None."""
    did, collection, rkey = uri.removeprefix("at://").split("/")
    table = _BY_NSID.get(collection, RECORD)
    where = "did = $1 AND rkey = $2" + ("" if table.nsid else " AND collection = $3")
    args = (did, rkey) if table.nsid else (did, rkey, collection)
    async with pool.acquire() as conn:
        return await conn.fetchrow(f"SELECT {columns} FROM {table.table} WHERE {where}", *args)


async def live_uris(pool: Any) -> set[str]:
    """The AT-URIs of every live record."""
    sql = f"SELECT 'at://' || did || '/' || collection || '/' || rkey FROM ({live_records_sql()}) r"
    async with pool.acquire() as conn:
        return {r[0] for r in await conn.fetch(sql)}


async def live_pairs(pool: Any, table: str, nsid: str, column: str) -> set[tuple[str, Any]]:
    """(uri, `column`) of every live row of a collection's table."""
    sql = f"SELECT 'at://' || did || '/{nsid}/' || rkey, {column} FROM {table} WHERE NOT tombstone"
    async with pool.acquire() as conn:
        return {(r[0], r[1]) for r in await conn.fetch(sql)}
