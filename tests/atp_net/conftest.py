"""Fixtures for the network clients: a small devnet per test (it starts in ~0.1 s)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from atp.xrpc import XrpcClient
from devnet import Devnet, DevnetConfig, FaultConfig
from tests._support import LOOPBACK

StartNet = Callable[..., Awaitable[Devnet]]


@pytest.fixture
async def start_net() -> AsyncIterator[StartNet]:
    """`net = await start_net(repos=..., faults=FaultConfig(...))`; stopped after the test."""
    nets: list[Devnet] = []

    async def start(**overrides: Any) -> Devnet:
        config = DevnetConfig(**{"repos": 40, "pds_hosts": 2, "seed": 11, **overrides})
        net = Devnet(config)
        await net.start()
        nets.append(net)
        return net

    try:
        yield start
    finally:
        for net in nets:
            await net.stop()


@pytest.fixture
async def net(start_net: StartNet) -> Devnet:
    """A devnet with one taken-down, one deactivated and one missing repo."""
    return await start_net(faults=FaultConfig(takendown=1, deactivated=1, missing=1))


@pytest.fixture
async def xrpc() -> AsyncIterator[XrpcClient]:
    async with XrpcClient(timeout_s=5.0, policy=LOOPBACK) as client:
        yield client
