"""Test helpers: wait on conditions, never on fixed sleeps."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from atp.netpolicy import NetPolicy

T = TypeVar("T")

# Devnets and test servers listen on loopback: tests that talk to them allow private hosts
# (tests/atp_net/test_netpolicy.py checks the policy itself, on and off).
LOOPBACK = NetPolicy(allow_private=True)


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 20.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
        await anyio.sleep(interval)
