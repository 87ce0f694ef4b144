"""atproto repositories: read a getRepo CAR into its commit and records; build and sign repos.

Reading:

    reader = await read_repo(source, did=did, signing_key=key)   # source: AsyncIterator[bytes]
    reader.commit                                                # Commit (v2 or v3)
    async for part in reader.slices():                           # RecordSlice: columns, key order
        for collection, rkey, cid, record in zip(*part): ...

`read_repo` consumes the whole CAR first, because getRepo emits blocks in no particular order and
the MST walk needs them all. Every block is hash-verified as it streams in and kept in a
`BlockStore`: in memory up to `memory_bytes` (256 MiB by default, counting each block's CID, index
and object overhead, not only its bytes), in a temporary SQLite file beyond it (atp.blocks), so
memory stays bounded whatever the repo's size or shape. Then the commit's DID is checked and its
signature verified when a key is given. Records are produced in slices of bounded work (at most
`SLICE_RECORDS` records and about `SLICE_BYTES` of record bytes): the MST walk checks the tree as
it goes (atp.mstwalk), record blocks are decoded a slice at a time, and `slices` yields to the
event loop between slices, so a large or hostile repo never blocks it for long. A partial CAR
(firehose slice) fails with MissingBlockError during the walk.

Writing: `build_repo` encodes records, builds the MST and signs a commit; `BuiltRepo` exposes the
block CIDs so a caller can diff two builds (`diff_blocks`) to get a commit's new blocks.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
import libipld

from atp import cbor
from atp.blocks import DEFAULT_MEMORY_BYTES, BlockStore
from atp.car import CarReader, read_car, write_car
from atp.cbor import CID, cid_bytes_for, cid_str
from atp.commit import Commit, check_commit, parse_commit, sign_commit
from atp.crypto import PublicKey, SigningKey
from atp.errors import CborError, MissingBlockError, MstError
from atp.mst import build_raw
from atp.mstwalk import MstWalker

__all__ = [
    "SLICE_BYTES",
    "SLICE_RECORDS",
    "BuiltRepo",
    "Commit",
    "RecordSlice",
    "RepoReader",
    "RepoRecord",
    "build_repo",
    "check_commit",
    "diff_blocks",
    "parse_commit",
    "read_repo",
    "sign_commit",
]

# Records per slice: well under a millisecond of work, the longest the event loop waits on a
# reader. Small enough that a slice's decoded records die young: with 1000, they lived through
# enough collections to reach the oldest generation and cost full collections (measured).
SLICE_RECORDS = 256
# Record bytes decoded per slice (at least one record): bounds a slice's time and memory however
# large the records are (a block may be up to 8 MiB, see atp.car).
SLICE_BYTES = 1024 * 1024
# Blocks written to a spilled store per step (SQLite inserts cost ~10-30 us each).
SPILL_BATCH = 512
_TAG42 = b"\xd8\x2a"
# Record paths `<collection>/<rkey>` in the characters the repository spec allows, matched once
# per slice against the keys joined by newlines (a character no such path contains).
_PATHS = re.compile(rb"(?:[A-Za-z0-9._:~-]+/[A-Za-z0-9._:~-]+\n)*[A-Za-z0-9._:~-]+/[A-Za-z0-9._:~-]+")


class RepoRecord(NamedTuple):
    """One record: `collection/rkey`, its CID, and the decoded DAG-CBOR object (links as `CID`)."""

    # A NamedTuple, not a frozen dataclass: construction is 3x cheaper, and there is one per record.

    collection: str
    rkey: str
    cid: str
    record: Any

    @property
    def key(self) -> str:
        """The MST key `collection/rkey`."""
        return f"{self.collection}/{self.rkey}"


def _paths(keys: list[bytes]) -> list[str]:
    """Split a slice's keys into [collection, rkey, collection, rkey, ...]; refuse non-paths."""
    joined = b"\n".join(keys)
    if _PATHS.fullmatch(joined) is not None:  # the common case, checked for all keys at once
        return joined.decode("ascii").replace("/", "\n").split("\n")
    # Some key has other characters: it must still be UTF-8 `collection/rkey`. A record key the
    # syntax refuses is the caller's to set aside (the backfiller dead-letters that record alone).
    parts: list[str] = []
    for key in keys:
        try:
            collection, _, rkey = key.decode().partition("/")
        except UnicodeDecodeError:
            raise MstError(f"MST key {key!r} is not UTF-8") from None
        if not collection or not rkey or "/" in rkey:
            raise MstError(f"MST key {key!r} is not a record path (collection/rkey)")
        parts += (collection, rkey)
    return parts


def _decode_all(datas: list[bytes]) -> list[Any]:
    """Decode record blocks, with links as `CID` (as cbor.decode does)."""
    try:
        decoded = list(map(libipld.decode_dag_cbor, datas))
    except (ValueError, RecursionError, TypeError) as exc:
        raise CborError(f"invalid DAG-CBOR record: {exc}") from None
    # Only blocks holding a tag 42 hold links (images, embeds): one search finds whether any do.
    if _TAG42 in b"".join(datas):
        for i, data in enumerate(datas):
            decoded[i] = cbor.mark_links(decoded[i], data)
    return decoded


class RecordSlice(NamedTuple):
    """Records of one slice, in key order, as columns: record i is (collection, rkey, cid, record)[i].

    Columns, not rows: a consumer iterating `zip(*slice)` builds no object per record.
    """

    collections: list[str]
    rkeys: list[str]
    cids: list[str]
    records: list[Any]

    def rows(self) -> list[RepoRecord]:
        """The slice as RepoRecords."""
        # tuple.__new__: RepoRecord without its Python-level __new__ (one per record).
        return list(map(tuple.__new__, repeat(RepoRecord), zip(*self, strict=True)))


def _slice(keys: list[bytes], values: list[bytes], datas: list[bytes | None]) -> RecordSlice:
    """Build the records of one slice (`datas` holds the blocks of the first len(datas) keys)."""
    if datas[-1] is None:
        key, cid = keys[len(datas) - 1], values[len(datas) - 1]
        raise MissingBlockError(f"record block {cid_str(cid)} for {key!r} is missing", cid_str(cid))
    if len(datas) < len(keys):
        keys, values = keys[: len(datas)], values[: len(datas)]
    parts = _paths(keys)
    decoded = _decode_all(cast(list[bytes], datas))  # no None: the last is checked above
    # Every value found in the store is a CIDv1 (atp.car refuses others): base32, as cid_str does.
    cids = list(map(libipld.encode_multibase, repeat("b"), values))
    return RecordSlice(parts[0::2], parts[1::2], cids, decoded)


class RepoReader:
    """A fully received, verified repo CAR: the commit, then records on demand in key order."""

    def __init__(self, commit: Commit, blocks: BlockStore) -> None:
        self.commit = commit
        self.blocks = blocks

    def close(self) -> None:
        """Release the blocks (memory and temporary file)."""
        self.blocks.close()

    def iter_slices(self) -> Iterator[RecordSlice]:
        """Yield every record in key order, in slices of bounded work (synchronous)."""
        walker = MstWalker(self.blocks.get, CID.from_str(self.commit.data))
        get_many = self.blocks.get_many
        more = True
        while more:
            keys: list[bytes] = []
            values: list[bytes] = []
            more = walker.step(keys, values, SLICE_RECORDS)
            while keys:
                datas = get_many(values, SLICE_BYTES)
                yield _slice(keys, values, datas)
                keys, values = keys[len(datas) :], values[len(datas) :]

    async def slices(self) -> AsyncIterator[RecordSlice]:
        """Yield every record in key order, in slices, letting the event loop run between them."""
        for part in self.iter_slices():
            yield part
            await anyio.lowlevel.checkpoint()

    async def record_batches(self) -> AsyncIterator[list[RepoRecord]]:
        """Yield every record in key order, a slice's RepoRecords at a time."""
        async for part in self.slices():
            yield part.rows()

    async def records(self) -> AsyncIterator[RepoRecord]:
        """Yield every record in key order (one at a time: `slices` is cheaper)."""
        async for part in self.slices():
            for record in part.rows():
                yield record

    def iter_records(self) -> Iterator[RepoRecord]:
        """Yield every record in key order (synchronous)."""
        for part in self.iter_slices():
            yield from part.rows()

    def iter_keys(self) -> Iterator[tuple[str, str]]:
        """Yield (key, record CID) in key order without touching record blocks."""
        walker = MstWalker(self.blocks.get, CID.from_str(self.commit.data))
        more = True
        while more:
            keys: list[bytes] = []
            values: list[bytes] = []
            more = walker.step(keys, values, SLICE_RECORDS)
            if keys:
                parts = _paths(keys)
                paths = map("/".join, zip(parts[0::2], parts[1::2], strict=True))
                yield from zip(paths, map(cid_str, values), strict=True)


async def _add_in_pieces(blocks: BlockStore, cids: list[bytes], datas: list[bytes]) -> None:
    """Add blocks to a spilled store a few hundred at a time, yielding in between."""
    for start in range(0, len(cids), SPILL_BATCH):
        piece = datas[start : start + SPILL_BATCH]
        blocks.add(cids[start : start + SPILL_BATCH], piece, sum(map(len, piece)))
        await anyio.lowlevel.checkpoint()


async def _collect(reader: CarReader, memory_bytes: int) -> BlockStore:
    """Gather every block of the CAR (verified by the reader as they stream in)."""
    blocks = BlockStore(memory_bytes)
    try:
        async for cids, datas, nbytes in reader.columns():
            if blocks.spilled and len(cids) > SPILL_BATCH:
                await _add_in_pieces(blocks, cids, datas)
            else:
                blocks.add(cids, datas, nbytes)
            # A source whose data is already buffered never suspends: yield to the loop here.
            await anyio.lowlevel.checkpoint()
        if blocks.spilled:  # one long sort in SQLite, which releases the GIL: off the event loop
            await anyio.to_thread.run_sync(blocks.seal)
    except BaseException:
        blocks.close()
        raise
    return blocks


async def read_repo(
    source: AsyncIterator[bytes],
    *,
    did: str | None = None,
    signing_key: PublicKey | None = None,
    max_bytes: int | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> RepoReader:
    """Read a repo CAR from an async byte source; check the commit; return a RepoReader.

    Blocks beyond `memory_bytes` are kept in a temporary file (see atp.blocks); close the
    reader (or let it be collected) to release it.
    """
    reader = await read_car(source, max_bytes=max_bytes)
    blocks = await _collect(reader, memory_bytes)
    try:
        root = CID.from_str(reader.header.roots[0])
        commit_block = blocks.get(root)
        if commit_block is None:
            raise MissingBlockError(f"commit block {cid_str(root)} is missing", cid_str(root))
        commit = parse_commit(root, commit_block)
        check_commit(commit, did=did, signing_key=signing_key)
    except BaseException:
        blocks.close()
        raise
    return RepoReader(commit, blocks)


@dataclass(frozen=True, slots=True)
class BuiltRepo:
    """A freshly built repo: CAR bytes, commit and MST root CIDs, and every block."""

    car: bytes
    commit_cid: str
    root: str
    rev: str
    blocks: dict[str, bytes]
    record_cids: dict[str, str]
    node_cids: frozenset[str] = field(default_factory=frozenset)


def _encode_records(records: Iterable[tuple[str, Any]]) -> tuple[dict[str, bytes], dict[bytes, bytes]]:
    """Encode records; return ({key: binary CID}, {binary CID: block})."""
    keys: dict[str, bytes] = {}
    blocks: dict[bytes, bytes] = {}
    for key, record in records:
        if key in keys:
            raise MstError(f"duplicate record key {key!r}")
        data = record if isinstance(record, bytes) else cbor.encode(record)
        cid = cid_bytes_for(data)
        keys[key] = cid
        blocks[cid] = data
    return keys, blocks


def build_repo(
    did: str,
    records: Iterable[tuple[str, Any]],
    *,
    rev: str,
    signing_key: SigningKey,
    prev: str | None = None,
) -> BuiltRepo:
    """Build a signed repo from ("collection/rkey", record) pairs; a record may be pre-encoded bytes."""
    keys, record_blocks = _encode_records(records)
    root, node_blocks = build_raw(keys.items())
    commit_cid, commit_block = sign_commit(did, cid_str(root), rev=rev, signing_key=signing_key, prev=prev)
    blocks = {commit_cid: commit_block}
    blocks.update((cid_str(c), b) for c, b in node_blocks.items())
    blocks.update((cid_str(c), b) for c, b in record_blocks.items())
    return BuiltRepo(
        car=write_car([commit_cid], blocks.items()),
        commit_cid=commit_cid,
        root=cid_str(root),
        rev=rev,
        blocks=blocks,
        record_cids={key: cid_str(cid) for key, cid in keys.items()},
        node_cids=frozenset(cid_str(c) for c in node_blocks),
    )


def diff_blocks(old: BuiltRepo | None, new: BuiltRepo) -> dict[str, bytes]:
    """Return the blocks of `new` that `old` lacks: new commit, new MST nodes, new records."""
    if old is None:
        return dict(new.blocks)
    return {cid: data for cid, data in new.blocks.items() if cid not in old.blocks}
