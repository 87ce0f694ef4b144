"""Shared fixtures: a real Redis (embedded Valkey or STREAMFILL_TEST_REDIS_URL) and a real
PostgreSQL (embedded pgserver or STREAMFILL_TEST_DATABASE_URL). Never mocks."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "atproto"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def atproto_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"real AT Protocol data not found at {SHARED_DATA} (../shared must sit beside the checkout)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("STREAMFILL_TEST_REDIS_URL")
    if url:
        yield url
        return
    from streams._embedded import start_embedded_valkey

    server = start_embedded_valkey()
    try:
        yield str(server.connection_url)
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("STREAMFILL_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    pgdata = Path(tempfile.mkdtemp(prefix="streamfill-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
