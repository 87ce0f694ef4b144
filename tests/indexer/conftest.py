"""Fixtures for the indexer tests: each test gets a schema of its own, migrated, and a pool."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from workers.indexer.db import create_pool
from workers.indexer.migrate import migrate


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    """A fresh, empty schema, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
        yield name
        await conn.execute(f"DROP SCHEMA {name} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def pool(database_url: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's schema, with the indexer's migrations applied."""
    pool = await create_pool(database_url, max_size=4, schema=schema)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        yield pool
    finally:
        await pool.close()
