"""What a cluster node believes about the cluster: CLUSTER NODES parsed into comparable values.

Only the lasting facts are kept (ids, addresses, roles, agreed failures, slots); ping times,
link states, `myself` and suspected failures (`fail?`, one node's opinion) are dropped, so two
nodes that agree produce equal values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    address: str  # host:port (clients), without the bus port
    role: str  # "master" or "replica"
    master_id: str | None  # for replicas
    failed: bool  # the cluster agreed this node is down (`fail`)
    handshake: bool  # met but not yet known by its real id
    slots: tuple[tuple[int, int], ...]  # inclusive ranges served (masters)


@dataclass(frozen=True, slots=True)
class Topology:
    members: tuple[Member, ...]  # sorted by node id

    def get(self, node_id: str) -> Member | None:
        return next((m for m in self.members if m.node_id == node_id), None)

    def role(self, node_id: str) -> str | None:
        member = self.get(node_id)
        return None if member is None else member.role

    def masters(self) -> list[Member]:
        """Masters serving at least one slot and not failed."""
        return [m for m in self.members if m.role == "master" and m.slots and not m.failed]

    def replicas(self) -> list[Member]:
        return [m for m in self.members if m.role == "replica" and not m.failed]

    def replicas_of(self, master_id: str) -> set[str]:
        return {m.node_id for m in self.replicas() if m.master_id == master_id}

    def covered_slots(self) -> int:
        return sum(last - first + 1 for m in self.masters() for first, last in m.slots)

    def owner(self, slot: int) -> str:
        for member in self.masters():
            if any(first <= slot <= last for first, last in member.slots):
                return member.node_id
        raise LookupError(f"slot {slot} is not served by any master")


@dataclass(frozen=True, slots=True)
class NodeView:
    state: str  # cluster_state: "ok" or "fail"
    topology: Topology


def _slots(fields: list[str]) -> tuple[tuple[int, int], ...]:
    ranges: list[tuple[int, int]] = []
    for item in fields:
        if item.startswith("["):  # a slot being migrated/imported: not served yet
            continue
        first, _, last = item.partition("-")
        ranges.append((int(first), int(last or first)))
    return tuple(sorted(ranges))


def _member(line: str) -> Member:
    parts = line.split()
    node_id, address, flags = parts[0], parts[1], set(parts[2].split(","))
    return Member(
        node_id=node_id,
        address=address.split("@", 1)[0],
        role="master" if "master" in flags else "replica",
        master_id=None if parts[3] == "-" else parts[3],
        failed="fail" in flags,
        handshake="handshake" in flags,
        slots=_slots(parts[8:]),
    )


def parse_cluster_nodes(text: str) -> Topology:
    """CLUSTER NODES output -> Topology."""
    members = [_member(line) for line in text.splitlines() if line.strip()]
    return Topology(tuple(sorted(members, key=lambda m: m.node_id)))


def slot_ranges(slots: int, parts: int) -> list[tuple[int, int]]:
    """`slots` split into `parts` contiguous inclusive ranges, sizes differing by at most one."""
    size, extra = divmod(slots, parts)
    ranges: list[tuple[int, int]] = []
    first = 0
    for i in range(parts):
        last = first + size + (1 if i < extra else 0) - 1
        ranges.append((first, last))
        first = last + 1
    return ranges
