"""CAR v1 reading (streaming, bounded memory, CID-verified) and writing.

Layout: `uvarint(len) + DAG-CBOR {version: 1, roots: [CID]}`, then sections of
`uvarint(len) + binary CID + block bytes`. The reader holds only the unparsed tail of the input
(at most the current section plus one chunk). In strict mode (`verify=True`, the atproto default)
every CID must be CIDv1 sha2-256 with the dag-cbor or raw codec and its block must hash to it;
`verify=False` only checks the framing and accepts any CID.

    reader = await read_car(source)          # source: AsyncIterator[bytes]; reads the header
    reader.header.roots                      # list of CID strings
    async for batch in reader.batches():     # list of (binary CID, block bytes), in file order
        ...
    async for cids, datas, nbytes in reader.columns():   # the same as columns, cheaper
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter

import libipld

from atp.cbor import CID, DAG_CBOR_SHA256_PREFIX, RAW_SHA256_PREFIX, cid_str
from atp.errors import (
    CarBlockMismatchError,
    CarError,
    CarHeaderError,
    CarTooLargeError,
    CarTruncatedError,
    CarUnsupportedCidError,
    CarVersionError,
    CarZeroLengthSectionError,
)

__all__ = [
    "CarHeader",
    "CarReader",
    "iter_car",
    "read_car",
    "read_car_bytes",
    "read_car_bytes_raw",
    "write_car",
]

# A CAR header is a tiny map; anything bigger is a corrupt length, refused before allocating.
MAX_HEADER_BYTES = 64 * 1024
# atproto blocks are limited to ~1 MB (records, MST nodes); a larger section is corrupt or hostile.
MAX_SECTION_BYTES = 8 * 1024 * 1024
# Input parsed per step of `CarReader.columns` (an HTTP body comes in chunks of this size).
FEED_BYTES = 64 * 1024
_SHA256_PREFIXES = (DAG_CBOR_SHA256_PREFIX, RAW_SHA256_PREFIX)
_SHA256 = hashlib.sha256()
_PREFIX = itemgetter(slice(0, 4))
_DIGEST = itemgetter(slice(4, 36))

Block = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class CarHeader:
    """The CAR header: version (always 1 here) and root CIDs as strings."""

    version: int
    roots: list[str]


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint at pos; return (value, new pos), or (-1, pos) if incomplete."""
    value = shift = 0
    end = len(buf)
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CarError("varint longer than 9 bytes")
    return -1, pos


def _parse_header(data: bytes, *, strict: bool) -> CarHeader:
    """Decode and check the header map."""
    try:
        header = libipld.decode_dag_cbor(data)
    except (ValueError, RecursionError) as exc:
        raise CarHeaderError(f"header is not DAG-CBOR: {exc}") from None
    if not isinstance(header, dict):
        raise CarHeaderError("header is not a map")
    version = header.get("version")
    if version != 1:
        raise CarVersionError(f"unsupported CAR version {version!r} (only CARv1)")
    roots = header.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, bytes) for r in roots):
        raise CarHeaderError(f"header roots must be a list of CIDs, got {roots!r}")
    if strict and not roots:
        raise CarHeaderError("header has no roots (an atproto CAR needs its commit as root)")
    return CarHeader(1, [cid_str(r) for r in roots])


def _generic_cid_len(buf: bytes, pos: int, end: int) -> int:
    """Return the length of any binary CID (v0 or v1) starting at pos within a section."""
    if buf[pos : pos + 2] == b"\x12\x20":
        return 34
    cur = pos
    for _ in range(3):  # version, codec, multihash code
        _, cur = _uvarint(buf, cur)
    size, cur = _uvarint(buf, cur)
    if size < 0 or cur + size > end:
        raise CarError(f"malformed CID at offset {pos}")
    return cur + size - pos


def _unsupported(buf: bytes, pos: int) -> CarUnsupportedCidError:
    """Describe why the CID at pos is not an atproto CID."""
    head = buf[pos : pos + 4]
    if head[:2] == b"\x12\x20":
        return CarUnsupportedCidError("CIDv0 is not allowed in atproto")
    if head[:1] != b"\x01":
        return CarUnsupportedCidError(f"unsupported CID version byte 0x{head[:1].hex()}")
    return CarUnsupportedCidError(f"unsupported CID (need sha2-256 dag-cbor/raw): prefix {head.hex()}")


class _Sections:
    """Incremental section parser: feed bytes; the blocks completed so far gather in columns."""

    __slots__ = ("buf", "cids", "datas", "header", "nbytes", "need", "offset", "pending", "strict")

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.buf = b""
        self.pending: list[bytes] = []  # chunks gathered for a section longer than the buffer
        self.need = 0
        self.offset = 0  # file offset of buf[0], for error messages
        self.header: CarHeader | None = None
        self.cids: list[bytes] = []
        self.datas: list[bytes] = []
        self.nbytes = 0  # total length of `datas`

    def take(self) -> tuple[list[bytes], list[bytes], int]:
        """Return the blocks gathered since the last call: (CIDs, block bytes, their total length)."""
        out = self.cids, self.datas, self.nbytes
        self.cids, self.datas, self.nbytes = [], [], 0
        return out

    def feed(self, chunk: bytes) -> None:
        """Add input; complete blocks are appended to the columns."""
        if self.need:
            self.pending.append(chunk)
            self.need -= len(chunk)
            if self.need > 0:
                return
            self.need = 0
            chunk = b"".join(self.pending)
            self.pending = []
        buf = self.buf + chunk if self.buf else chunk
        pos = self._header(buf) if self.header is None else 0
        if pos < 0:
            self.buf = buf
            return
        pos = self._sections(buf, pos) if self.strict else self._generic_sections(buf, pos)
        self.offset += pos
        self.buf = buf[pos:]

    def _header(self, buf: bytes) -> int:
        """Parse the header if complete; return the position after it or -1."""
        length, pos = _uvarint(buf, 0)
        if length > MAX_HEADER_BYTES:
            raise CarHeaderError(f"header length {length} is implausible")
        if length == 0:
            raise CarHeaderError("header length is zero")
        if length < 0 or pos + length > len(buf):
            return -1
        self.header = _parse_header(buf[pos : pos + length], strict=self.strict)
        return pos + length

    def _length(self, buf: bytes, pos: int) -> tuple[int, int]:
        """Decode a section length of 3+ varint bytes at pos: (length, start), (-1, pos) if incomplete."""
        length, start = _uvarint(buf, pos)
        if length == 0:
            raise CarZeroLengthSectionError(f"zero-length section at offset {self.offset + pos}")
        if length > MAX_SECTION_BYTES:
            raise CarTooLargeError(f"section of {length} bytes exceeds {MAX_SECTION_BYTES}")
        return length, start

    def _sections(self, buf: bytes, pos: int) -> int:
        """Parse and verify every complete section in buf from pos; return where parsing stopped."""
        first = len(self.cids)
        digests: list[bytes] = []
        try:
            pos = self._split(buf, pos, digests)
        except CarError:
            self._verify(first, digests)  # a bad block before the bad section is the first problem
            raise
        self._verify(first, digests)
        return pos

    def _split(self, buf: bytes, pos: int, digests: list[bytes]) -> int:
        """Cut complete sections into CIDs and blocks, hashing each block (checked by `_verify`)."""
        # The loop that runs once per block of every repo read: calls hoisted into locals, the
        # sha-256 state copied from a prepared one (cheaper than a new OpenSSL context), and the
        # checks left to `_verify`, which makes them for all the blocks at once.
        end_all = len(buf)
        new_hash = _SHA256.copy
        add_cid = self.cids.append
        add_data = self.datas.append
        add_digest = digests.append
        while pos < end_all:
            length = buf[pos]
            if length < 0x80:
                start = pos + 1
            elif pos + 1 < end_all and buf[pos + 1] < 0x80:  # most blocks are 128 B - 16 KiB
                length = (length & 0x7F) | (buf[pos + 1] << 7)
                start = pos + 2
            else:
                length, start = self._length(buf, pos)
                if length < 0:
                    break
            if length < 36:  # also a zero length: an atproto section holds a 36-byte CID at least
                raise self._short(buf, pos, start, length)
            end = start + length
            if end > end_all:
                self._wait_for(end - end_all)
                break
            data = buf[start + 36 : end]
            digest = new_hash()
            digest.update(data)
            add_digest(digest.digest())
            add_cid(buf[start : start + 36])
            add_data(data)
            pos = end
        return pos

    def _verify(self, first: int, digests: list[bytes]) -> None:
        """Check the blocks gathered from `first` on: CIDv1 sha2-256 dag-cbor/raw, hashing to their CID."""
        if not digests:
            return
        cids = self.cids[first:] if first else self.cids
        self.nbytes += sum(map(len, self.datas[first:] if first else self.datas))
        # Whole-chunk comparisons in C: all prefixes dag-cbor, all digests equal.
        all_dag_cbor = b"".join(map(_PREFIX, cids)) == DAG_CBOR_SHA256_PREFIX * len(cids)
        if all_dag_cbor and b"".join(digests) == b"".join(map(_DIGEST, cids)):
            return
        for cid, digest in zip(cids, digests, strict=True):
            if not cid.startswith(_SHA256_PREFIXES):
                raise _unsupported(cid, 0)
            if not cid.endswith(digest):
                raise CarBlockMismatchError(f"block {cid_str(cid)} does not match")

    def _short(self, buf: bytes, pos: int, start: int, length: int) -> CarError:
        """The error for a strict-mode section too short to hold an atproto CID."""
        if length == 0:
            return CarZeroLengthSectionError(f"zero-length section at offset {self.offset + pos}")
        if start + length > len(buf):
            return CarTruncatedError(f"section at offset {self.offset + pos} is cut short")
        return _unsupported(buf, start)

    def _generic_sections(self, buf: bytes, pos: int) -> int:
        """Framing only (`verify=False`): split sections with any CID, hash nothing."""
        end_all = len(buf)
        while pos < end_all:
            length, start = _uvarint(buf, pos)
            if length < 0:
                break
            if length == 0:
                raise CarZeroLengthSectionError(f"zero-length section at offset {self.offset + pos}")
            end = start + length
            if end > end_all:
                if length > MAX_SECTION_BYTES:
                    raise CarTooLargeError(f"section of {length} bytes exceeds {MAX_SECTION_BYTES}")
                self._wait_for(end - end_all)
                break
            cid_len = _generic_cid_len(buf, start, end)
            self.cids.append(buf[start : start + cid_len])
            self.datas.append(buf[start + cid_len : end])
            self.nbytes += end - start - cid_len
            pos = end
        return pos

    def _wait_for(self, missing: int) -> None:
        """Gather a long section's chunks before joining them once."""
        if missing > 64 * 1024:
            self.need = missing

    def finish(self) -> None:
        """Check the input ended on a section boundary."""
        if self.header is None:
            raise CarTruncatedError("input ended inside the CAR header")
        if self.buf or self.pending:
            raise CarTruncatedError("input ended inside a section")


class CarReader:
    """A CAR being read from an async byte source; the header is already parsed."""

    def __init__(self, header: CarHeader, parser: _Sections, rest: AsyncIterator[bytes],
                 max_bytes: int | None, seen: int) -> None:  # fmt: skip
        self.header = header
        self._parser = parser
        self._source = rest
        self._max_bytes = max_bytes
        self.bytes_read = seen

    async def columns(self) -> AsyncIterator[tuple[list[bytes], list[bytes], int]]:
        """Yield (binary CIDs, block bytes, their total length) in file order; raises CarError subclasses."""
        parser = self._parser
        if parser.cids:
            yield parser.take()
        async for chunk in self._source:
            self.bytes_read += len(chunk)
            if self._max_bytes is not None and self.bytes_read > self._max_bytes:
                raise CarTooLargeError(f"CAR exceeds {self._max_bytes} bytes")
            # A huge chunk is parsed a piece at a time, so what a caller gets per step is bounded.
            for start in range(0, len(chunk), FEED_BYTES):
                parser.feed(chunk[start : start + FEED_BYTES] if len(chunk) > FEED_BYTES else chunk)
                if parser.cids:
                    yield parser.take()
        parser.finish()

    async def batches(self) -> AsyncIterator[list[Block]]:
        """Yield lists of (binary CID, block bytes) in file order; raises CarError subclasses."""
        async for cids, datas, _ in self.columns():
            yield list(zip(cids, datas, strict=True))


async def read_car(
    source: AsyncIterator[bytes], *, max_bytes: int | None = None, verify: bool = True
) -> CarReader:
    """Start reading a CAR from an async byte source: parse the header, return the reader."""
    parser = _Sections(strict=verify)
    seen = 0
    async for chunk in source:
        seen += len(chunk)
        if max_bytes is not None and seen > max_bytes:
            raise CarTooLargeError(f"CAR exceeds {max_bytes} bytes")
        parser.feed(chunk)
        if parser.header is not None:
            return CarReader(parser.header, parser, source, max_bytes, seen)
    parser.finish()
    raise CarTruncatedError("empty input")  # unreachable: finish() raises without a header


def read_car_bytes_raw(data: bytes, *, verify: bool = True) -> tuple[CarHeader, dict[bytes, bytes]]:
    """Read an in-memory CAR; return the header and {binary CID: block bytes}."""
    parser = _Sections(strict=verify)
    parser.feed(bytes(data))
    parser.finish()
    assert parser.header is not None
    return parser.header, dict(zip(parser.cids, parser.datas, strict=True))


def read_car_bytes(data: bytes, *, verify: bool = True) -> tuple[CarHeader, dict[str, bytes]]:
    """Read a small in-memory CAR (e.g. a firehose `blocks` slice): header and {CID: bytes}."""
    header, blocks = read_car_bytes_raw(data, verify=verify)
    return header, {cid_str(cid): block for cid, block in blocks.items()}


def _varint(n: int) -> bytes:
    """Encode an unsigned LEB128 varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _as_cid(cid: str | bytes) -> bytes:
    """Accept a CID string or binary CID."""
    return CID.from_str(cid) if isinstance(cid, str) else bytes(cid)


def iter_car(
    roots: Sequence[str] | Sequence[bytes],
    blocks: Iterable[tuple[str | bytes, bytes]],
    *,
    chunk_size: int = 64 * 1024,
) -> Iterator[bytes]:
    """Write a CAR v1 as a stream of chunks of about `chunk_size` bytes."""
    header = libipld.encode_dag_cbor({"version": 1, "roots": [_as_cid(r) for r in roots]})
    parts = [_varint(len(header)), header]
    size = len(parts[0]) + len(header)
    for cid, data in blocks:
        raw = _as_cid(cid)
        parts += (_varint(len(raw) + len(data)), raw, data)
        size += len(raw) + len(data) + 4
        if size >= chunk_size:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def write_car(roots: Sequence[str] | Sequence[bytes], blocks: Iterable[tuple[str | bytes, bytes]]) -> bytes:
    """Write a CAR v1 to bytes."""
    return b"".join(iter_car(roots, blocks))
