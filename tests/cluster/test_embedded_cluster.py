"""The embedded cluster: it comes up settled, every node agrees, and it leaves nothing behind."""

from __future__ import annotations

import itertools
import os

import pytest
import redis
from redis.crc import key_slot

from streams import ClusterStartError, EmbeddedCluster, EmbeddedClusterOptions
from streams._cluster_nodes import parse_cluster_nodes, slot_ranges
from streams._keys import Keys, spread_tag

NODES = """\
07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002,host-2 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 connected 10923-16383
6ec2 127.0.0.1:30005@31005 slave,fail? 67ed 0 1426238316232 5 connected
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5459 5460 [5460->-67ed]
"""


def test_cluster_nodes_keeps_the_lasting_facts() -> None:
    topology = parse_cluster_nodes(NODES)
    e7d1 = topology.get("e7d1")
    assert e7d1 is not None and e7d1.slots == ((0, 5459), (5460, 5460)) and e7d1.address == "127.0.0.1:30001"
    assert topology.owner(5460) == "e7d1" and topology.owner(5461) == "67ed"
    # `fail` is the cluster's verdict and counts; `fail?` is one node's suspicion and does not.
    assert [m.node_id for m in topology.masters()] == ["67ed", "e7d1"]
    assert topology.replicas_of("e7d1") == {"07c3"} and topology.replicas_of("67ed") == {"6ec2"}
    assert topology.covered_slots() == 10923
    with pytest.raises(LookupError):
        topology.owner(16000)
    # Who says it (`myself`) and when (ping times) do not change the value.
    other = NODES.replace("myself,master", "master").replace("1426238316232", "1")
    assert parse_cluster_nodes(other) == topology


def test_slot_ranges_split_evenly() -> None:
    assert slot_ranges(16384, 3) == [(0, 5461), (5462, 10922), (10923, 16383)]
    for parts in (1, 2, 5, 7, 64):
        ranges = slot_ranges(16384, parts)
        sizes = [last - first + 1 for first, last in ranges]
        assert sum(sizes) == 16384 and max(sizes) - min(sizes) <= 1
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))


@pytest.mark.parametrize("count", [2, 3, 6, 12, 64])
def test_partition_keys_fall_in_equal_slot_ranges(count: int) -> None:
    keys = Keys("p")
    ranges = slot_ranges(16384, count)
    names = [keys.partition("firehose_backfill", i, count) for i in range(count)]
    for (first, last), name in zip(ranges, names, strict=True):
        assert first <= key_slot(name.encode()) <= last
        # The DLQ of a partition shares its slot (one hash tag).
        assert key_slot(keys.dlq(name).encode()) == key_slot(name.encode())
    assert len(set(names)) == count
    assert keys.partition("firehose_backfill", 0, 1) == keys.stream("firehose_backfill")
    assert spread_tag("firehose_backfill", 1, count) == spread_tag("firehose_backfill", 1, count)
    with pytest.raises(ValueError):
        keys.partition("firehose_backfill", count, count)


def test_a_cluster_with_replicas_comes_up_settled_and_goes_away_clean() -> None:
    cluster = EmbeddedCluster(EmbeddedClusterOptions(masters=2, replicas=1))
    with cluster:
        root = cluster.root
        assert root is not None and root.is_dir()
        topology = cluster.topology()  # raises unless every node agrees
        masters = topology.masters()
        assert len(masters) == 2 and topology.covered_slots() == 16384
        assert sorted(m.slots for m in masters) == [((0, 8191),), ((8192, 16383),)]
        for master in masters:
            assert len(topology.replicas_of(master.node_id)) == 1
        ports = [n.port for n in cluster.nodes] + [n.bus_port for n in cluster.nodes]
        assert len(set(ports)) == 8
        for node in cluster.nodes:
            assert node.command("CLUSTER", "INFO").decode().count("cluster_state:ok") == 1
        # Keys are served by the master that owns their slot, and only there.
        owner = cluster.node_for_key("{k}x")
        assert owner.client().set("{k}x", "v")
        other = next(n for n in cluster.nodes if n.node_id in {m.node_id for m in masters} and n is not owner)
        with pytest.raises(redis.exceptions.MovedError):
            other.client().get("{k}x")
        pids = [n.process.pid for n in cluster.nodes]
    assert all(not n.alive for n in cluster.nodes)
    assert not root.exists()
    assert all(not _running(pid) for pid in pids)


def test_a_start_that_fails_half_way_stops_what_it_started() -> None:
    # A deadline no cluster can meet: the nodes are spawned, then the first wait gives up.
    cluster = EmbeddedCluster(EmbeddedClusterOptions(masters=3, start_timeout_s=0.0))
    with pytest.raises(ClusterStartError):
        cluster.start()
    assert cluster.nodes, "nodes were spawned before the failure"
    assert all(not n.alive for n in cluster.nodes)
    assert cluster.root is None
    assert not any(p.name.startswith("node") for p in _spawned_dirs(cluster))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _spawned_dirs(cluster: EmbeddedCluster) -> list[os.DirEntry[str]]:
    parents = {n.data_dir.parent for n in cluster.nodes}
    return [entry for parent in parents if parent.exists() for entry in os.scandir(parent)]
