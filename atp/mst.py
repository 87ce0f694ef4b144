"""Merkle Search Tree: key heights, an in-order walk, and a builder that matches the reference layout.

A node is `{l: CID|null, e: [{p, k, v, t}]}`: `l` is the subtree of keys before the first entry,
each entry holds a key (prefix-compressed against the previous entry of the same node: key =
previous[:p] + k), the record CID `v`, and `t`, the subtree of keys between it and the next entry.
A key lives on the layer given by the number of leading zero 2-bit chunks of sha256(key); every
child of a layer-h node is a layer h-1 node (possibly one with no entries, only `l`).

Internally CIDs are binary (`bytes`); the `str` variants exist for callers that hold CID strings.
Walking an untrusted tree checks it against the spec's rules as it goes (atp.mstwalk).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

from atp.cbor import CID, DAG_CBOR_SHA256_PREFIX, cid_str, encode_head, encode_link
from atp.errors import MstError
from atp.mstwalk import MstWalker

__all__ = ["build", "build_raw", "encode_node", "key_height", "walk", "walk_raw"]

GetBlock = Callable[[bytes], "bytes | None"]


def key_height(key: str | bytes) -> int:
    """Return the MST layer of a key: leading zero bits of sha256(key), counted in 2-bit chunks."""
    raw = key.encode() if isinstance(key, str) else key
    digest = int.from_bytes(hashlib.sha256(raw).digest(), "big")
    return (256 - digest.bit_length()) // 2


# ---------------------------------------------------------------------------------------- walk


def walk_raw(get_block: GetBlock, root: bytes) -> Iterator[tuple[str, bytes]]:
    """Yield (key, binary record CID) in key order, checking the tree (atp.mstwalk)."""
    walker = MstWalker(get_block, root)
    more = True
    while more:
        keys: list[bytes] = []
        values: list[bytes] = []
        more = walker.step(keys, values, 1000)
        for key, value in zip(keys, values, strict=True):
            try:
                yield key.decode(), value
            except UnicodeDecodeError:
                raise MstError(f"MST key is not UTF-8: {key!r}") from None


def walk(get_block: Callable[[str], bytes], root: str) -> Iterator[tuple[str, str]]:
    """Yield (key, record CID) in key order from the tree at `root` (CID strings)."""

    def by_raw(cid: bytes) -> bytes | None:
        try:
            return get_block(cid_str(cid))
        except KeyError:
            return None

    for key, value in walk_raw(by_raw, CID.from_str(root)):
        yield key, cid_str(value)


# ------------------------------------------------------------------------------------- builder


def encode_node(left: bytes | None, entries: list[tuple[bytes, bytes, bytes | None]]) -> bytes:
    """Encode a node canonically: map keys e < l; entry keys k < p < t < v."""
    parts = [b"\xa2\x61e", encode_head(0x80, len(entries))]
    previous = b""
    for key, value, right in entries:
        p = 0
        limit = min(len(key), len(previous))
        while p < limit and key[p] == previous[p]:
            p += 1
        suffix = key[p:]
        parts.append(b"\xa4\x61k" + encode_head(0x40, len(suffix)) + suffix + b"\x61p" + encode_head(0, p))
        parts.append(b"\x61t" + encode_link(right) + b"\x61v" + encode_link(value))
        previous = key
    parts.append(b"\x61l" + encode_link(left))
    return b"".join(parts)


class _Builder:
    """Builds nodes bottom-up from sorted keys with precomputed heights."""

    def __init__(self, keys: list[bytes], values: list[bytes], heights: list[int]) -> None:
        self.keys, self.values, self.heights = keys, values, heights
        self.blocks: dict[bytes, bytes] = {}

    def node(self, layer: int, lo: int, hi: int) -> bytes:
        """Build the layer-`layer` node holding keys[lo:hi]; return its binary CID."""
        heights = self.heights
        entries: list[tuple[bytes, bytes, bytes | None]] = []
        left: bytes | None = None
        start = lo
        for i in range(lo, hi):
            if heights[i] == layer:
                sub = self.node(layer - 1, start, i) if i > start else None
                if entries:
                    key, value, _ = entries[-1]
                    entries[-1] = (key, value, sub)
                else:
                    left = sub
                entries.append((self.keys[i], self.values[i], None))
                start = i + 1
        sub = self.node(layer - 1, start, hi) if hi > start else None
        if entries:
            key, value, _ = entries[-1]
            entries[-1] = (key, value, sub)
        else:
            left = sub
        data = encode_node(left, entries)
        cid = DAG_CBOR_SHA256_PREFIX + hashlib.sha256(data).digest()
        self.blocks[cid] = data
        return cid


def build_raw(items: Iterable[tuple[str, bytes]]) -> tuple[bytes, dict[bytes, bytes]]:
    """Build a tree from (key, binary record CID); return (root CID, node blocks), CIDs binary."""
    pairs = sorted((key.encode(), value) for key, value in items)
    for i in range(1, len(pairs)):
        if pairs[i][0] == pairs[i - 1][0]:
            raise MstError(f"duplicate MST key {pairs[i][0]!r}")
    keys = [k for k, _ in pairs]
    heights = [key_height(k) for k in keys]
    builder = _Builder(keys, [v for _, v in pairs], heights)
    root = builder.node(max(heights, default=0), 0, len(keys))
    return root, builder.blocks


def build(items: Iterable[tuple[str, str]]) -> tuple[str, dict[str, bytes]]:
    """Build a tree from (key, record CID string); return (root CID, {node CID: node bytes})."""
    root, blocks = build_raw((key, CID.from_str(value)) for key, value in items)
    return cid_str(root), {cid_str(cid): data for cid, data in blocks.items()}
