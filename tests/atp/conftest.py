"""Fixtures for the atp codec tests: feed bytes to the streaming readers in chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from atp.repo import RepoReader, read_repo


async def chunked(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """Serve bytes as an async source of `size`-byte chunks, like an HTTP body."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.fixture
def repo_from_bytes() -> Callable[..., Awaitable[RepoReader]]:
    """Return `await repo_from_bytes(car, chunk=..., **read_repo_kwargs)`."""

    async def read(data: bytes, chunk: int = 64 * 1024, **kwargs: Any) -> RepoReader:  # read_repo's kwargs
        return await read_repo(chunked(data, chunk), **kwargs)

    return read
