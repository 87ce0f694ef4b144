"""One node of the embedded Redis Cluster: its options, its process and config, and the polling wait.

See `streams/_embedded_cluster.py` for the cluster built from these.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from streams._errors import ClusterStartError

T = TypeVar("T")

# How often a wait re-checks its condition: short enough that a test does not idle, long
# enough not to load a busy 2-core machine with INFO calls.
POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class EmbeddedClusterOptions:
    """How many nodes, and how fast the cluster declares a silent master dead."""

    masters: int = 3
    replicas: int = 0  # per master
    # A master unreachable for this long is flagged failing and its replica takes over. Redis'
    # default is 15 s; shorter makes failover tests fast, but below ~1 s a loaded machine's
    # scheduling stalls start false failovers.
    node_timeout_ms: int = 5000
    start_timeout_s: float = 60.0
    host: str = "127.0.0.1"
    password: str | None = None  # requirepass on every node (and masterauth for replicas)


@dataclass(slots=True, eq=False)
class Node:
    """One valkey-server process of the cluster."""

    index: int
    host: str
    port: int
    bus_port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    password: str | None = None
    node_id: str = ""
    _client: redis.Redis | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def client(self) -> redis.Redis:
        """A plain (non-cluster) client of this node alone, for administration."""
        if self._client is None:
            self._client = redis.Redis(
                host=self.host,
                port=self.port,
                password=self.password,
                socket_timeout=5,
                socket_connect_timeout=2,
            )
        return self._client

    def command(self, *args: str | int | bytes) -> Any:
        """One command on this node, e.g. `command("CLUSTER", "MYID")`."""
        # redis-py leaves execute_command untyped.
        return self.client().execute_command(*args)  # type: ignore[no-untyped-call]

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.data_dir / "valkey.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_ports(host: str, count: int) -> list[int]:
    """Ports the kernel hands out as free right now; a lost race shows up as a failed start."""
    import socket

    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def node_config(node_dir: Path, port: int, bus_port: int, opts: EmbeddedClusterOptions) -> Path:
    """Write the node's config file (a file, not arguments: the password stays out of `ps`)."""
    settings = {
        "port": str(port),
        "bind": opts.host,
        "dir": str(node_dir),
        "logfile": "valkey.log",
        "save": '""',
        "appendonly": "no",
        "cluster-enabled": "yes",
        # Explicit bus port: the default (port + 10000) overflows for ports above 55535.
        "cluster-port": str(bus_port),
        "cluster-config-file": "nodes.conf",
        "cluster-node-timeout": str(opts.node_timeout_ms),
        # A replica takes over however long its link was down (tests kill masters under load).
        "cluster-replica-validity-factor": "0",
        # Full resyncs start at once instead of waiting 5 s for more replicas to join.
        "repl-diskless-sync-delay": "0",
    }
    if opts.password:
        settings |= {"requirepass": opts.password, "masterauth": opts.password}
    path = node_dir / "valkey.conf"
    path.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
    return path


def wait_for(what: str, check: Callable[[], T | None], deadline: float, nodes: list[Node]) -> T:
    """Poll `check` until it returns something other than None/False; raise with node logs."""
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value is not None and value is not False:
                return value
        except redis.RedisError as exc:  # a node still starting, or one that was just killed
            last_error = exc
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- node {n.address} ---\n{n.log_tail()}" for n in nodes)
            raise ClusterStartError(f"embedded cluster: {what} not reached ({last_error})\n{logs}")
        time.sleep(POLL_S)
