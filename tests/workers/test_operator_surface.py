"""What an operator sees: where /metrics listens, and a bad value of the SSRF switch."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from tests._support import wait_until

pytestmark = pytest.mark.anyio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) with a socket listening on `port`."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            out.add(address)
    return out


@pytest.mark.parametrize(("metrics_host", "expected"), [(None, "0100007F"), ("0.0.0.0", "00000000")])
async def test_metrics_listen_on_loopback_unless_told(
    redis_url: str, prefix: str, metrics_host: str | None, expected: str
) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "METRICS_HOST"}
    env |= {"REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix, "METRICS_PORT": str(port)}
    if metrics_host is not None:
        env["METRICS_HOST"] = metrics_host
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "backfiller"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        await wait_until(lambda: _listening(port), timeout=60, what="/metrics listening")
        assert _listening(port) == {expected}  # 127.0.0.1, or every interface
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(lambda: proc.wait(30))


@pytest.mark.parametrize("command", ["backfiller", "ingester"])
def test_a_bad_allow_private_hosts_value_exits_2(redis_url: str, command: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "STREAMFILL_ALLOW_PRIVATE_HOSTS": "maybe"}
    env["INGESTER_RELAY_HOSTS"] = "http://127.0.0.1:9"
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", command], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()  # one line naming the setting and the value
    assert (
        line.startswith("streamfill: STREAMFILL_ALLOW_PRIVATE_HOSTS must be true or false")
        and "'maybe'" in line
    )
