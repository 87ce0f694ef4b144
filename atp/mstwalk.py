"""An in-order walk of an untrusted Merkle Search Tree that checks it is a tree of the repo spec.

A repo's MST comes from whoever serves the CAR, so the walk trusts nothing about its shape. It
checks, as it goes, the rules of the atproto repository spec:

- every key of a node has the node's layer (leading zero bits of sha256(key), halved); the root's
  layer is its first key's, each subtree (`l`, `t`) is one layer down, a layer-0 node has none;
- keys are non-empty, at most `MAX_KEY_BYTES`, the first entry of a node has prefix length 0, and
  keys rise strictly across the whole walk (so every subtree stays within its key range);
- the only node without entries and subtree is the root of an empty tree, and the root is never
  a node that only points to a subtree;
- a node has at most `MAX_NODE_ENTRIES` entries (a statistically impossible count for real keys).

Together these make every node visited at most once: a node reached a second time would emit its
keys again, which the strict order refuses (at the latest after descending the at most 129 layers
of its leftmost path), and a chain of entry-less nodes cannot be longer than the layers allow. The
work of a walk is therefore linear in the blocks of the CAR, whatever a hostile server sends, and
`step` hands out the keys in bounded slices so a caller can yield to its event loop in between.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import libipld

from atp.cbor import cid_str
from atp.errors import CborError, MissingBlockError, MstError

__all__ = ["MAX_KEY_BYTES", "MAX_NODE_ENTRIES", "MstWalker", "layer_of", "read_node"]

GetBlock = Callable[[bytes], "bytes | None"]

# Record paths are `<collection>/<rkey>`: an NSID (<= 317 chars) and a record key (<= 512).
MAX_KEY_BYTES = 1024
# A node's entry count is geometric with ratio 3/4 for keys that are not mined: more than 1,024
# entries has a probability of 1e-128. The cap bounds what one node costs to decode and hold.
MAX_NODE_ENTRIES = 1024
_SHA256 = hashlib.sha256()
_ENTRY = itemgetter("k", "p", "t", "v")

# A node as the walk holds it: keys, record CIDs, right subtrees (or None), and its layer.
_Node = tuple[list[bytes], list[bytes], list["bytes | None"], int]


def _layer_of(key: bytes) -> int:
    digest = _SHA256.copy()
    digest.update(key)
    return (256 - int.from_bytes(digest.digest(), "big").bit_length()) >> 1


def _check_layer(keys: list[bytes], layer: int, cid: bytes) -> None:
    """Refuse a node holding a key of another layer."""
    for key in keys:
        if _layer_of(key) != layer:
            raise MstError(f"MST node {cid_str(cid)} is on layer {layer} but holds {key!r} "
                           f"of layer {_layer_of(key)}")  # fmt: skip


def _malformed(entries: list[Any], cid: bytes) -> MstError:
    return MstError(f"malformed MST entry in node {cid_str(cid)}: {entries!r:.300}")


def _out_of_order(key: bytes, previous: bytes, cid: bytes) -> MstError:
    if not key:
        return MstError(f"empty MST key in node {cid_str(cid)}")
    return MstError(f"MST keys out of order in node {cid_str(cid)}: {key!r} after {previous!r}")


def _expand_leaf(entries: list[Any], cid: bytes, keys: list[bytes], values: list[bytes]) -> None:
    """Append the keys and values of a layer-0 node (most nodes: no subtrees allowed).

    The loop that runs once per record of every repo read. It hashes each key too: a key is on
    layer 0 exactly when its hash starts with a nonzero 2-bit chunk. A non-int `p` fails the
    slice, a non-bytes `k` the concatenation (TypeError); a `p` beyond the previous key, or
    negative, gives a key shorter than `p + len(k)`.
    """
    add_key = keys.append
    add_value = values.append
    fields = _ENTRY
    max_key = MAX_KEY_BYTES
    previous = b""
    new_hash = _SHA256.copy
    on_layer = True
    try:
        for entry in entries:
            k, p, t, v = fields(entry)
            if p:
                key = previous[:p] + k
                size = len(key)
                if size != p + len(k) or size > max_key:
                    raise _malformed(entries, cid)
            elif k.__class__ is bytes and p.__class__ is int and len(k) <= max_key:
                key = k
            else:
                raise _malformed(entries, cid)
            if key <= previous:  # also an empty key
                raise _out_of_order(key, previous, cid)
            if t is not None or v.__class__ is not bytes:
                raise _malformed(entries, cid)
            digest = new_hash()
            digest.update(key)
            if digest.digest()[0] < 0x40:
                on_layer = False
            add_key(key)
            add_value(v)
            previous = key
    except (KeyError, TypeError):
        raise _malformed(entries, cid) from None
    if not on_layer:
        _check_layer(keys[len(keys) - len(entries) :], 0, cid)


def _expand(entries: list[Any], cid: bytes) -> tuple[list[bytes], list[bytes], list[bytes | None]]:
    """Expand a node's prefix-compressed entries into keys, values and right subtrees."""
    keys: list[bytes] = []
    values: list[bytes] = []
    rights: list[bytes | None] = []
    previous = b""
    try:
        for entry in entries:
            p, k, v, t = entry["p"], entry["k"], entry["v"], entry["t"]
            if p.__class__ is not int or k.__class__ is not bytes or v.__class__ is not bytes:
                raise _malformed(entries, cid)
            if t is not None and t.__class__ is not bytes:
                raise _malformed(entries, cid)
            if p:
                if p < 0 or p > len(previous) or p + len(k) > MAX_KEY_BYTES:
                    raise _malformed(entries, cid)
                k = previous[:p] + k
            elif len(k) > MAX_KEY_BYTES:
                raise _malformed(entries, cid)
            if k <= previous:  # also an empty key
                raise _out_of_order(k, previous, cid)
            keys.append(k)
            values.append(v)
            rights.append(t)
            previous = k
    except (KeyError, TypeError):
        raise _malformed(entries, cid) from None
    return keys, values, rights


class MstWalker:
    """Walks the MST at `root` in key order, checking its structure (see the module docstring)."""

    __slots__ = ("_get", "_last", "_pending", "_stack", "nodes")

    def __init__(self, get_block: GetBlock, root: bytes) -> None:
        self._get = get_block
        self._last = b""
        self._stack: list[list[Any]] = []  # open inner nodes: [node, next entry index]
        self._pending: tuple[bytes, int] | None = None  # a subtree to enter next, and its layer
        self.nodes = 0  # nodes loaded so far
        entries, left = self._decode(root)
        keys, values, rights = _expand(entries, root)
        layer = _root_layer(keys, left, root)
        self._enter_inner(root, (keys, values, rights, layer), left)

    def step(self, keys: list[bytes], values: list[bytes], limit: int) -> bool:
        """Append about `limit` more (key, record CID) pairs in order; return False once done.

        A step loads at most `limit` nodes holding keys plus, per key, the few entry-less nodes
        the layers allow, so its work is bounded whatever the tree looks like.
        """
        target = len(keys) + limit
        stack = self._stack
        while len(keys) < target:
            if self._pending is not None:
                cid, layer = self._pending
                self._pending = None
                entries, left = self._decode(cid)
                if layer == 0:
                    self._emit_leaf(cid, entries, left, keys, values)
                else:
                    node_keys, node_values, rights = _expand(entries, cid)
                    if not node_keys and left is None:
                        raise MstError(f"MST node {cid_str(cid)} is empty (no entries, no subtree)")
                    self._enter_inner(cid, (node_keys, node_values, rights, layer), left)
                continue
            if not stack:
                return False
            frame = stack[-1]
            node, index = frame
            if index == len(node[0]):
                stack.pop()
                continue
            frame[1] = index + 1
            key = node[0][index]
            if key <= self._last:
                self._refuse(key)
            self._last = key
            keys.append(key)
            values.append(node[1][index])
            right = node[2][index]
            if right is not None:
                self._pending = (right, node[3] - 1)
        return bool(stack) or self._pending is not None

    def _emit_leaf(self, cid: bytes, entries: list[Any], left: bytes | None, keys: list[bytes],
                   values: list[bytes]) -> None:  # fmt: skip
        """A layer-0 node below the root: its keys are emitted at once."""
        if left is not None:
            raise MstError(f"MST node {cid_str(cid)} on layer 0 has subtrees")
        if not entries:
            raise MstError(f"MST node {cid_str(cid)} is empty (no entries, no subtree)")
        first = len(keys)
        _expand_leaf(entries, cid, keys, values)
        if keys[first] <= self._last:
            self._refuse(keys[first])
        self._last = keys[-1]

    def _enter_inner(self, cid: bytes, node: _Node, left: bytes | None) -> None:
        """Check an inner node (or the root) and stack it; its left subtree is entered next."""
        node_keys, _, rights, layer = node
        if layer == 0 and (left is not None or rights.count(None) != len(rights)):
            raise MstError(f"MST node {cid_str(cid)} on layer 0 has subtrees")
        if node_keys:
            _check_layer(node_keys, layer, cid)
        self._stack.append([node, 0])
        if left is not None:
            self._pending = (left, layer - 1)

    def _refuse(self, key: bytes) -> None:
        if key == self._last:
            raise MstError(f"MST key {key!r} appears twice: a node is reached twice, the MST is not a tree")
        raise MstError(f"MST keys out of order across subtrees: {key!r} after {self._last!r}")

    def _decode(self, cid: bytes) -> tuple[list[Any], bytes | None]:
        self.nodes += 1
        return _decode(self._get, cid)


def _decode(get_block: GetBlock, cid: bytes) -> tuple[list[Any], bytes | None]:
    """Fetch and decode one node: its entries (not yet checked) and left link."""
    data = get_block(cid)
    if data is None:
        raise MissingBlockError(f"MST node {cid_str(cid)} is missing", cid_str(cid))
    try:
        decoded = libipld.decode_dag_cbor(data)
    except (ValueError, RecursionError) as exc:
        raise CborError(f"MST node {cid_str(cid)} is not DAG-CBOR: {exc}") from None
    if decoded.__class__ is not dict or (entries := decoded.get("e")).__class__ is not list:
        raise MstError(f"MST node {cid_str(cid)} has no entry list")
    left = decoded.get("l")
    if left is not None and left.__class__ is not bytes:
        raise MstError(f"MST node {cid_str(cid)} has a bad left link")
    if len(entries) > MAX_NODE_ENTRIES:
        raise MstError(f"MST node {cid_str(cid)} has {len(entries)} entries (limit {MAX_NODE_ENTRIES})")
    return entries, left


def read_node(
    get_block: GetBlock, cid: bytes
) -> tuple[bytes | None, list[bytes], list[bytes], list[bytes | None]]:
    """Fetch one node: (left subtree, keys, record CIDs, right subtrees), its entries checked."""
    entries, left = _decode(get_block, cid)
    keys, values, rights = _expand(entries, cid)
    return left, keys, values, rights


def layer_of(key: bytes) -> int:
    """The MST layer of a key (as atp.mst.key_height, for bytes)."""
    return _layer_of(key)


def _root_layer(keys: list[bytes], left: bytes | None, cid: bytes) -> int:
    """The root's layer is its first key's; an entry-less root is only allowed as the empty tree."""
    if keys:
        return _layer_of(keys[0])
    if left is not None:
        raise MstError(f"MST root {cid_str(cid)} is an empty node pointing to a subtree")
    return 0
