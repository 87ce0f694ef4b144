"""Fixtures for devnet tests: start devnets that are stopped after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from devnet import Devnet, DevnetConfig

DevnetFactory = Callable[..., Awaitable[Devnet]]


@pytest.fixture
async def devnet_factory() -> AsyncIterator[DevnetFactory]:
    """`net = await devnet_factory(repos=..., ...)`; every devnet started is stopped afterwards."""
    nets: list[Devnet] = []

    async def start(**overrides: Any) -> Devnet:
        net = Devnet(DevnetConfig(**{"repos": 30, "pds_hosts": 2, "seed": 5, **overrides}))
        await net.start()
        nets.append(net)
        return net

    try:
        yield start
    finally:
        for net in nets:
            await net.stop()
