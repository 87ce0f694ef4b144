"""Versioned schema migrations (`migrations/NNNN_name.sql`), tracked in `schema_migrations`.

Every indexer replica calls `migrate()` on start. A transaction-scoped advisory lock, keyed on
the current schema, makes concurrent starts apply each migration exactly once: the second replica
waits, then finds nothing left to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TRACKING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
# One lock per schema, so that test schemas (and separate deployments sharing a server) do not
# wait on each other.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('streamfill.indexer.migrate:' || current_schema()))"


@dataclass(frozen=True)
class Migration:
    """One versioned SQL file."""

    version: str
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migrations in `directory`, in version order; rejects badly named files and duplicates."""
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name!r} must be named NNNN_name.sql")
        version, name = match.groups()
        if version in found:
            raise ValueError(f"two migrations share version {version}")
        found[version] = Migration(version, name, path.read_text())
    return [found[v] for v in sorted(found)]


async def migrate(conn: Any, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations in one transaction; returns the versions applied (maybe none)."""
    pending_all = load_migrations() if migrations is None else migrations
    async with conn.transaction():
        await conn.execute(_LOCK)
        await conn.execute(_CREATE_TRACKING)
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for migration in pending_all:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
    return applied


async def applied_versions(conn: Any) -> list[str]:
    """Versions recorded in `schema_migrations` (empty when the table does not exist yet)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return []
    rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [row["version"] for row in rows]
