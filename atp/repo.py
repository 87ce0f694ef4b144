"""atproto repositories: read a getRepo CAR into its commit and records; build and sign repos.

Reading:

    reader = await read_repo(source, did=did, signing_key=key)   # source: AsyncIterator[bytes]
    reader.commit                                                # Commit (v2 or v3)
    async for rec in reader.records():                           # RepoRecord, in key order
        ...

`read_repo` consumes the whole CAR first, because getRepo emits blocks in no particular order and
the MST walk needs them all: block bytes are kept in memory up to `memory_bytes` (256 MiB by
default) and in a temporary file beyond it (atp.blocks), so memory stays bounded whatever the repo
size; records are decoded one at a time as they are yielded. Every
block is hash-verified while streaming, the commit's DID is checked, and its signature verified
when a key is given. A partial CAR (firehose slice) fails with MissingBlockError during the walk.

Writing: `build_repo` encodes records, builds the MST and signs a commit; `BuiltRepo` exposes the
block CIDs so a caller can diff two builds (`diff_blocks`) to get a commit's new blocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import anyio
import libipld

from atp import cbor
from atp.blocks import DEFAULT_MEMORY_BYTES, BlockStore
from atp.car import CarReader, read_car, write_car
from atp.cbor import CID, cid_bytes_for, cid_str, encode_head, encode_link, encode_text
from atp.crypto import PublicKey, SigningKey, verify
from atp.errors import CborError, CommitError, MissingBlockError, MstError
from atp.mst import build_raw, walk_raw

__all__ = [
    "BuiltRepo",
    "Commit",
    "RepoReader",
    "RepoRecord",
    "build_repo",
    "check_commit",
    "diff_blocks",
    "parse_commit",
    "read_repo",
    "sign_commit",
]

# Yield to the event loop this often while walking, so a big repo does not starve other tasks.
_CHECKPOINT_EVERY = 2000
_TAG42 = b"\xd8\x2a"


def _decode_plain(decode: Any, data: bytes) -> Any:
    """Decode a link-free record block, mapping libipld's errors."""
    try:
        return decode(data)
    except (ValueError, RecursionError) as exc:
        raise CborError(f"invalid DAG-CBOR record: {exc}") from None


@dataclass(frozen=True, slots=True)
class Commit:
    """A signed repo commit (version 3, or legacy version 2 without `rev`)."""

    did: str
    version: int
    data: str
    rev: str | None
    prev: str | None
    sig: bytes
    cid: str

    def unsigned_bytes(self) -> bytes:
        """Return the DAG-CBOR bytes the signature covers (the commit without `sig`)."""
        return _encode_commit(self.did, self.version, CID.from_str(self.data), self.rev,
                              CID.from_str(self.prev) if self.prev else None, None)  # fmt: skip


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


def _encode_commit(did: str, version: int, data: bytes, rev: str | None, prev: bytes | None,
                   sig: bytes | None) -> bytes:  # fmt: skip
    """Encode a commit canonically (keys by length then bytes: did, rev, sig, data, prev, version)."""
    fields = [(b"\x63did", encode_text(did))]
    if rev is not None:
        fields.append((b"\x63rev", encode_text(rev)))
    if sig is not None:
        fields.append((b"\x63sig", encode_head(0x40, len(sig)) + sig))
    fields += [(b"\x64data", encode_link(data)), (b"\x64prev", encode_link(prev))]
    fields.append((b"\x67version", encode_head(0, version)))
    return encode_head(0xA0, len(fields)) + b"".join(k + v for k, v in fields)


def parse_commit(cid: bytes, block: bytes) -> Commit:
    """Decode and check a commit block."""
    try:
        obj = libipld.decode_dag_cbor(block)
    except ValueError as exc:
        raise CommitError(f"commit {cid_str(cid)} is not DAG-CBOR: {exc}") from None
    if not isinstance(obj, dict):
        raise CommitError("commit is not a map")
    did, version, data, sig = obj.get("did"), obj.get("version"), obj.get("data"), obj.get("sig")
    rev, prev = obj.get("rev"), obj.get("prev")
    if not isinstance(did, str) or version not in (2, 3) or not isinstance(data, bytes):
        raise CommitError(f"malformed commit {cid_str(cid)}: did={did!r} version={version!r}")
    if not isinstance(sig, bytes) or (version == 3 and not isinstance(rev, str)):
        raise CommitError(f"commit {cid_str(cid)} lacks sig or rev")
    if prev is not None and not isinstance(prev, bytes):
        raise CommitError(f"commit {cid_str(cid)} has a bad prev")
    return Commit(did, version, cid_str(data), rev if isinstance(rev, str) else None,
                  cid_str(prev) if prev else None, sig, cid_str(cid))  # fmt: skip


def check_commit(commit: Commit, *, did: str | None, signing_key: PublicKey | None) -> None:
    """Check the commit's DID and, with a key, its signature; raise CommitError / SignatureError."""
    if did is not None and commit.did != did:
        raise CommitError(f"commit is for {commit.did}, expected {did}")
    if signing_key is not None:
        # Legacy v2 commits predate the low-S rule and some were signed with high S (Go's ecdsa).
        verify(signing_key, commit.unsigned_bytes(), commit.sig, allow_high_s=commit.version == 2)


class RepoReader:
    """A fully received, verified repo CAR: the commit, then records on demand in key order."""

    def __init__(self, commit: Commit, blocks: BlockStore | dict[bytes, bytes]) -> None:
        self.commit = commit
        self.blocks = blocks

    def close(self) -> None:
        """Release the blocks' temporary file, if they spilled to one."""
        if isinstance(self.blocks, BlockStore):
            self.blocks.close()

    def iter_records(self) -> Iterator[RepoRecord]:
        """Yield every record in key order (synchronous)."""
        get = self.blocks.get
        decode = libipld.decode_dag_cbor
        for key, cid in walk_raw(get, CID.from_str(self.commit.data)):
            data = get(cid)
            if data is None:
                raise MissingBlockError(f"record block {cid_str(cid)} for {key} is missing", cid_str(cid))
            collection, _, rkey = key.partition("/")
            if not rkey or "/" in rkey:
                raise MstError(f"MST key {key!r} is not collection/rkey")
            # cbor.decode inlined for the common case: a block without tag 42 holds no links.
            record = cbor.decode(data) if _TAG42 in data else _decode_plain(decode, data)
            yield RepoRecord(collection, rkey, cid_str(cid), record)

    def iter_keys(self) -> Iterator[tuple[str, str]]:
        """Yield (key, record CID) in key order without touching record blocks."""
        for key, cid in walk_raw(self.blocks.get, CID.from_str(self.commit.data)):
            yield key, cid_str(cid)

    async def records(self) -> AsyncIterator[RepoRecord]:
        """Yield every record in key order, checkpointing the event loop now and then."""
        # The loop of iter_records, inlined and with its calls flattened: this runs once per
        # record of every repo backfilled (see bench/bench_car.py).
        get = self.blocks.get
        decode = libipld.decode_dag_cbor
        multibase = libipld.encode_multibase
        new_record = tuple.__new__  # RepoRecord without its Python-level __new__
        count = 0
        for key, cid in walk_raw(get, CID.from_str(self.commit.data)):
            data = get(cid)
            if data is None:
                raise MissingBlockError(f"record block {cid_str(cid)} for {key} is missing", cid_str(cid))
            collection, _, rkey = key.partition("/")
            if not rkey or "/" in rkey:
                raise MstError(f"MST key {key!r} is not collection/rkey")
            if _TAG42 in data:
                record = cbor.decode(data)
            else:
                try:  # cbor.decode inlined: a block without tag 42 holds no links
                    record = decode(data)
                except (ValueError, RecursionError) as exc:
                    raise CborError(f"invalid DAG-CBOR record: {exc}") from None
            # CIDv1 (every record of a current repo): base32 multibase, as cid_str does.
            text = multibase("b", cid) if cid[0] == 1 else cid_str(cid)
            yield new_record(RepoRecord, (collection, rkey, text, record))
            count += 1
            if count == _CHECKPOINT_EVERY:
                count = 0
                await anyio.lowlevel.checkpoint()


async def _collect(reader: CarReader, memory_bytes: int) -> BlockStore:
    """Gather every block of the CAR (verified by the reader as they stream in)."""
    blocks = BlockStore(memory_bytes)
    try:
        async for batch in reader.batches():
            blocks.update(batch)
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

    Block bytes beyond `memory_bytes` are kept in a temporary file (see atp.blocks); close the
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


def sign_commit(
    did: str, data: str, *, rev: str, signing_key: SigningKey, prev: str | None = None
) -> tuple[str, bytes]:
    """Build and sign a version-3 commit; return (commit CID, commit block)."""
    data_cid = CID.from_str(data)
    prev_cid = CID.from_str(prev) if prev else None
    sig = signing_key.sign(_encode_commit(did, 3, data_cid, rev, prev_cid, None))
    block = _encode_commit(did, 3, data_cid, rev, prev_cid, sig)
    return cid_str(cid_bytes_for(block)), block


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
