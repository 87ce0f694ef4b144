"""Repo mechanics: signed v3 commits, MST rebuilds and diffs, getRepo CARs and commit proofs.

A commit rebuilds the account's whole MST with `atp.mst.build_raw` (about 3 µs a key), so live
activity is limited to repos below `DevnetConfig.live_max_records`; the huge repo is built once.
Signatures are RFC 6979 deterministic so that the same seed gives the same commit CIDs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import libipld

from atp.car import write_car
from atp.cbor import CID, cid_bytes_for, encode
from atp.crypto import SigningKey
from atp.mst import build_raw
from atp.mstinvert import previous_root
from devnet.state import Account

__all__ = [
    "Commit",
    "bad_signature_car",
    "build_commit",
    "deterministic_sign",
    "inversion_nodes",
    "proof_nodes",
    "repo_car",
]


def deterministic_sign(key: SigningKey, data: bytes) -> bytes:
    """Low-S r||s ECDSA over sha256(data) with an RFC 6979 nonce (same input, same signature)."""
    return key.sign(data, deterministic=True)


@dataclass(frozen=True, slots=True)
class Commit:
    """A new repo state: signed commit block, MST root and nodes, and nodes new since the parent."""

    rev: str
    cid: bytes
    block: bytes
    data_cid: bytes
    tree: dict[bytes, bytes]
    new_nodes: frozenset[bytes]


def sign_commit(did: str, key: SigningKey, data_cid: bytes, rev: str, *, corrupt: bool = False) -> bytes:
    """Encode a signed v3 commit block; `corrupt` flips the signature (bad-signature fault)."""
    unsigned = {"did": did, "version": 3, "data": CID(data_cid), "rev": rev, "prev": None}
    sig = deterministic_sign(key, encode(unsigned))
    if corrupt:
        sig = bytes([sig[0] ^ 0xFF]) + sig[1:]
    return encode({**unsigned, "sig": sig})


def build_commit(account: Account, rev: str) -> Commit:
    """Rebuild the MST from `account.records` and sign a commit for it (the account is unchanged)."""
    root, tree = build_raw((path, ref.cid) for path, ref in account.records.items())
    block = sign_commit(account.did, account.key, root, rev)
    return Commit(
        rev=rev,
        cid=cid_bytes_for(block),
        block=block,
        data_cid=root,
        tree=tree,
        new_nodes=frozenset(cid for cid in tree if cid not in account.tree),
    )


def apply_commit(account: Account, commit: Commit) -> None:
    """Make `commit` the account's head and drop its cached CAR."""
    account.rev = commit.rev
    account.commit_cid = commit.cid
    account.commit_block = commit.block
    account.data_cid = commit.data_cid
    account.tree = commit.tree
    account.car = None


def _entries(block: bytes) -> tuple[bytes | None, list[tuple[bytes, bytes, bytes | None]]]:
    """(left subtree, [(full key, value CID, right subtree)]) of an MST node block."""
    node = libipld.decode_dag_cbor(block)
    entries: list[tuple[bytes, bytes, bytes | None]] = []
    previous = b""
    for entry in node["e"]:
        key = previous[: entry["p"]] + entry["k"]
        entries.append((key, entry["v"], entry["t"]))
        previous = key
    return node["l"], entries


def _walk_blocks(
    tree: dict[bytes, bytes], records: dict[bytes, bytes], node: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
    """Depth-first, key order: each node, then its subtrees and record blocks as keys are met."""
    if node is None:
        return
    block = tree[node]
    yield node, block
    left, entries = _entries(block)
    yield from _walk_blocks(tree, records, left)
    for _key, value, right in entries:
        yield value, records[value]
        yield from _walk_blocks(tree, records, right)


def repo_car(account: Account, records: dict[bytes, bytes], *, commit_block: bytes | None = None) -> bytes:
    """The full getRepo CAR: commit first, then the MST walked in key order with its records."""
    block = commit_block or account.commit_block
    cid = cid_bytes_for(block)
    return write_car([cid], [(cid, block), *_walk_blocks(account.tree, records, account.data_cid)])


def bad_signature_car(account: Account, records: dict[bytes, bytes]) -> bytes:
    """The repo CAR with a commit whose signature does not verify."""
    block = sign_commit(account.did, account.key, account.data_cid, account.rev, corrupt=True)
    return repo_car(account, records, commit_block=block)


def _path(tree: dict[bytes, bytes], root: bytes, key: bytes) -> Iterator[bytes]:
    """CIDs of the nodes visited when searching for `key` from `root`."""
    node: bytes | None = root
    while node is not None and node in tree:
        yield node
        left, entries = _entries(tree[node])
        node = left
        for entry_key, _value, right in entries:
            if entry_key > key:
                break
            node = right if entry_key < key else None


def proof_nodes(commit: Commit, keys: Iterable[str]) -> set[bytes]:
    """New MST nodes plus every node on the search path of each op key."""
    nodes = set(commit.new_nodes)
    for key in keys:
        nodes.update(_path(commit.tree, commit.data_cid, key.encode()))
    return nodes


def inversion_nodes(commit: Commit, ops: Iterable[tuple[str, bytes | None, bytes | None]]) -> set[bytes]:
    """The MST nodes that undoing `ops` (path, CID after, CID before) reads, as Sync 1.1 requires
    a #commit to carry: the search paths, and the neighbours a created key's removal merges."""
    read: set[bytes] = set()

    def get(cid: bytes) -> bytes | None:
        read.add(cid)
        return commit.tree.get(cid)

    previous_root(get, commit.data_cid, ops)
    return read
