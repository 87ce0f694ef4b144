"""Embedded development PostgreSQL (pgserver) when no DATABASE_URL is given.

The twin of streams/_embedded.py (Redis); it lives in workers/ because streams/ knows nothing
about PostgreSQL.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from workers._errors import ServerError


def _say(message: str) -> None:
    print(f"streamfill: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def database_url_or_embedded(url: str | None, data_dir: Path | None = None) -> Iterator[str]:
    """Yield `url`, or start an embedded PostgreSQL for the duration of the block and yield its URI.

    With `data_dir` the cluster persists there; without, it lives in a temporary directory that
    is deleted on exit.
    """
    if url:
        yield url
        return
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ServerError(
            "DATABASE_URL is not set and pgserver is not installed: "
            "set DATABASE_URL or install streamfill[dev-servers]"
        ) from exc
    persistent = data_dir is not None
    pgdata = data_dir if data_dir is not None else Path(tempfile.mkdtemp(prefix="streamfill-pg-"))
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(  # type: ignore[attr-defined]  # pgserver has no __all__
        pgdata, cleanup_mode="stop" if persistent else "delete"
    )
    uri = server.get_uri()
    _say(f"DATABASE_URL not set: started embedded PostgreSQL at {uri}")
    try:
        yield uri
    finally:
        server.cleanup()
