"""Migrations: applied once, idempotent, safe when several replicas start at the same time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from workers.indexer.migrate import applied_versions, load_migrations, migrate

pytestmark = pytest.mark.anyio


async def connect(database_url: str, schema: str) -> Any:
    return await asyncpg.connect(database_url, server_settings={"search_path": schema})


async def test_migrate_twice_applies_once(database_url: str, schema: str) -> None:
    conn = await connect(database_url, schema)
    try:
        assert await applied_versions(conn) == []
        assert await migrate(conn) == [m.version for m in load_migrations()]
        assert await migrate(conn) == []
        assert await applied_versions(conn) == ["0001"]
        assert await conn.fetchval("SELECT to_regclass('post_agg') IS NOT NULL")
    finally:
        await conn.close()


async def test_concurrent_replicas_apply_each_migration_exactly_once(database_url: str, schema: str) -> None:
    conns = [await connect(database_url, schema) for _ in range(4)]
    results: list[list[str]] = []

    async def start(conn: Any) -> None:
        results.append(await migrate(conn))

    try:
        async with anyio.create_task_group() as tg:
            for conn in conns:
                tg.start_soon(start, conn)
        assert sorted(results) == [[], [], [], ["0001"]]
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == 1
    finally:
        for conn in conns:
            await conn.close()


def test_badly_named_migration_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "1_oops.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="NNNN_name"):
        load_migrations(tmp_path)
