"""Connection pools for the indexer: sized from config, optionally pinned to a schema."""

from __future__ import annotations

from typing import Any

import asyncpg

from workers.indexer.store import prepare_connection

# A statement that runs longer than this is treated as a lost connection (transient), so that a
# black-holed TCP connection cannot hang a batch forever.
DEFAULT_COMMAND_TIMEOUT_S = 120.0


async def create_pool(
    url: str,
    *,
    max_size: int = 4,
    schema: str | None = None,
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
) -> Any:
    """An asyncpg pool whose connections have the indexer's staging tables; with `schema`, every
    connection uses it as its search_path."""
    settings = {"search_path": schema} if schema else {}
    return await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=max_size,
        command_timeout=command_timeout_s,
        server_settings=settings,
        init=prepare_connection,
        reset=_keep_session,
    )


async def _keep_session(conn: Any) -> None:
    """Release without the default reset query: a round trip per batch for session state the
    indexer never sets, and its per-connection staging tables are meant to stay. (asyncpg still
    rolls back a transaction left open.)"""
