"""Undo a commit's operations on its partial MST to recompute the previous root (`prevData`).

A `#commit` frame (Sync 1.1) carries the new tree's changed nodes and, per op, the record CID
before it (`prev`). Inverting every op on that partial tree (a create becomes a delete, an update
restores the old CID, a delete re-inserts it) must give back the MST root the frame names as
`prevData`; otherwise the commit does not follow from it. The nodes an inversion touches must be
in the frame (MissingBlockError otherwise); the others stay CID links and keep their CIDs.

Each op descends at most one node per layer, and splits and merges follow one path per layer, so
the work is bounded by the ops and the tree's height, whatever the frame holds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from atp.cbor import cid_bytes_for, cid_str
from atp.errors import CommitError, MstError
from atp.mst import encode_node
from atp.mstwalk import layer_of, read_node

__all__ = ["previous_root"]

GetBlock = Callable[[bytes], "bytes | None"]


class _Node:
    """A loaded, mutable node; its links are None, a CID (not loaded) or a _Node."""

    __slots__ = ("cid", "keys", "layer", "left", "rights", "values")

    def __init__(self, layer: int, left: Link, keys: list[bytes], values: list[bytes], rights: list[Link],
                 cid: bytes | None = None) -> None:  # fmt: skip
        self.layer, self.left, self.keys, self.values, self.rights = layer, left, keys, values, rights
        self.cid = cid  # the CID it was loaded with; None once changed (or for a new node)

    def slot(self, i: int) -> Link:
        """The subtree before entry i (`left` for 0)."""
        return self.left if i == 0 else self.rights[i - 1]

    def set_slot(self, i: int, link: Link) -> None:
        if i == 0:
            self.left = link
        else:
            self.rights[i - 1] = link


Link = _Node | bytes | None


def _pruned(node: _Node) -> _Node | None:
    """A node with neither entries nor subtree is no node at all."""
    return None if not node.keys and node.left is None else node


class _Tree:
    """A partial MST loaded on demand from a block lookup."""

    def __init__(self, get_block: GetBlock, root: bytes) -> None:
        self._get = get_block
        left, keys, values, rights = read_node(get_block, root)
        if not keys and left is not None:
            raise MstError(f"MST root {cid_str(root)} is an empty node pointing to a subtree")
        layer = layer_of(keys[0]) if keys else 0
        self.root: _Node = _Node(layer, left, keys, values, list(rights), root)

    def _load(self, link: Link, layer: int) -> _Node:
        if isinstance(link, _Node):
            return link
        if link is None:
            return _Node(layer, None, [], [], [])
        left, keys, values, rights = read_node(self._get, link)
        return _Node(layer, left, keys, values, list(rights), link)

    def value(self, key: bytes) -> bytes | None:
        """The record CID at `key`, or None."""
        node, height = self.root, layer_of(key)
        while node.layer > height:
            i = bisect_left(node.keys, key)
            link = node.slot(i)
            if link is None:
                return None
            node = self._load(link, node.layer - 1)
        i = bisect_left(node.keys, key)
        return node.values[i] if node.layer == height and i < len(node.keys) and node.keys[i] == key else None

    def put(self, key: bytes, value: bytes) -> None:
        """Insert `key` (absent) or replace its value."""
        height = layer_of(key)
        root = self.root
        if height > root.layer:
            left, right = self._split(root, key, root.layer) if root.keys or root.left else (None, None)
            self.root = _Node(height, _raise(left, root.layer, height), [key], [value],
                              [_raise(right, root.layer, height)])  # fmt: skip
        else:
            self._put(root, key, value, height)

    def _put(self, node: _Node, key: bytes, value: bytes, height: int) -> None:
        node.cid = None
        i = bisect_left(node.keys, key)
        if node.layer == height:
            if i < len(node.keys) and node.keys[i] == key:
                node.values[i] = value
                return
            below, above = self._split(node.slot(i), key, node.layer - 1)
            node.set_slot(i, below)
            node.keys.insert(i, key)
            node.values.insert(i, value)
            node.rights.insert(i, above)
            return
        child = self._load(node.slot(i), node.layer - 1)
        self._put(child, key, value, height)
        node.set_slot(i, child)

    def _split(self, link: Link, key: bytes, layer: int) -> tuple[_Node | None, _Node | None]:
        """Split a subtree into the parts before and after `key`."""
        if link is None:
            return None, None
        node = self._load(link, layer)
        i = bisect_left(node.keys, key)
        below, above = self._split(node.slot(i), key, layer - 1) if layer > 0 else (None, None)
        before = _Node(layer, node.left if i else below, node.keys[:i], node.values[:i], node.rights[:i])
        if i:
            before.rights[-1] = below
        after = _Node(layer, above, node.keys[i:], node.values[i:], node.rights[i:])
        return _pruned(before), _pruned(after)

    def delete(self, key: bytes) -> None:
        """Remove `key`, which must be present."""
        height = layer_of(key)
        if height > self.root.layer:
            raise CommitError(f"cannot invert: {key!r} is not in the tree")
        root = self._delete(self.root, key, height)
        while root is not None and not root.keys and root.left is not None:
            root = self._load(root.left, root.layer - 1)  # an entry-less root gives way to its subtree
        self.root = root if root is not None else _Node(0, None, [], [], [])

    def _delete(self, node: _Node, key: bytes, height: int) -> _Node | None:
        node.cid = None
        i = bisect_left(node.keys, key)
        if node.layer == height:
            if i == len(node.keys) or node.keys[i] != key:
                raise CommitError(f"cannot invert: {key!r} is not in the tree")
            merged = self._merge(node.slot(i), node.rights[i], node.layer - 1)
            del node.keys[i], node.values[i], node.rights[i]
            node.set_slot(i, merged)
            return _pruned(node)
        link = node.slot(i)
        if link is None:
            raise CommitError(f"cannot invert: {key!r} is not in the tree")
        node.set_slot(i, self._delete(self._load(link, node.layer - 1), key, height))
        return _pruned(node)

    def _merge(self, first: Link, second: Link, layer: int) -> Link:
        """Join two adjacent subtrees of one layer."""
        if first is None or second is None:
            return first if second is None else second
        a, b = self._load(first, layer), self._load(second, layer)
        middle = self._merge(a.rights[-1] if a.keys else a.left, b.left, layer - 1)
        if not a.keys:
            return _Node(layer, middle, b.keys, b.values, b.rights)
        return _Node(layer, a.left, a.keys + b.keys, a.values + b.values, [*a.rights[:-1], middle, *b.rights])

    def root_cid(self) -> bytes:
        return _cid(self.root)


def _raise(node: _Node | None, layer: int, top: int) -> _Node | None:
    """Put entry-less nodes above a subtree so that it hangs one layer below `top`."""
    for up in range(layer + 1, top):
        if node is not None:
            node = _Node(up, node, [], [], [])
    return node


def _cid(link: Link) -> bytes:
    if link is None or isinstance(link, bytes):
        raise AssertionError("only loaded nodes are encoded")
    if link.cid is not None:
        return link.cid
    entries = [(k, v, _link(r)) for k, v, r in zip(link.keys, link.values, link.rights, strict=True)]
    return cid_bytes_for(encode_node(_link(link.left), entries))


def _link(link: Link) -> bytes | None:
    return link if link is None or isinstance(link, bytes) else _cid(link)


def previous_root(
    get_block: GetBlock, root: bytes, ops: Iterable[tuple[str, bytes | None, bytes | None]]
) -> bytes:
    """The MST root before `ops` (path, CID after, CID before) were applied to the tree at `root`."""
    tree = _Tree(get_block, root)
    for path, after, before in ops:
        key = path.encode()
        if tree.value(key) != after:
            raise CommitError(f"op on {path} does not match the tree: it holds another CID")
        if before is None:
            tree.delete(key)
        else:
            tree.put(key, before)
    return tree.root_cid()
