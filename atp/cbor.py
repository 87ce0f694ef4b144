"""DAG-CBOR codec on top of libipld, with CIDs kept distinct from byte strings.

libipld (3.x) decodes both a CID link (tag 42) and a plain byte string to `bytes`, and encodes any
`bytes` that parses as a CID as a link. `decode` therefore wraps each link in `CID` (a `bytes`
subclass holding the binary CID, so libipld re-encodes it as a link) and leaves byte strings as
plain `bytes`. Links are recognised by finding their exact tag-42 encoding in the input, which is
only searched for when the input contains a tag 42 at all (records with blobs, MST nodes, commits).

`to_json_model` gives the AT Protocol JSON data model: CID -> {"$link": str}, bytes -> {"$bytes": b64}.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import libipld
import orjson

from atp.crypto import b58encode
from atp.errors import CborError, InvalidCid

__all__ = [
    "CID",
    "cid_bytes_for",
    "cid_for",
    "cid_str",
    "decode",
    "encode",
    "encode_head",
    "encode_link",
    "encode_text",
    "from_json_model",
    "mark_links",
    "to_json_bytes",
    "to_json_model",
]

# Binary prefix of a CIDv1, dag-cbor codec (0x71), sha2-256 multihash (0x12) of 32 bytes.
DAG_CBOR_SHA256_PREFIX = b"\x01\x71\x12\x20"
# The same for the raw codec (0x55), used by blobs.
RAW_SHA256_PREFIX = b"\x01\x55\x12\x20"
_TAG42 = b"\xd8\x2a"


class CID(bytes):
    """A binary CID; str() gives the base32 multibase form ("bafy...")."""

    __slots__ = ()

    @classmethod
    def from_str(cls, text: str) -> CID:
        """Parse a base32 ("b...") CIDv1 string."""
        if not text.startswith("b") or len(text) < 8:
            raise InvalidCid(f"not a base32 CIDv1: {text!r}")
        try:
            _, raw = libipld.decode_multibase(text)
        except ValueError:
            raise InvalidCid(f"not a base32 CIDv1: {text!r}") from None
        if raw[0] != 1:
            raise InvalidCid(f"not a CIDv1: {text!r}")
        return cls(raw)

    def __str__(self) -> str:
        return cid_str(self)

    def __repr__(self) -> str:
        return f"CID({cid_str(self)!r})"


def cid_str(raw: bytes) -> str:
    """Format a binary CID: CIDv1 as base32 multibase, legacy CIDv0 as bare base58btc ("Qm...")."""
    if raw[:2] == b"\x12\x20":
        return b58encode(raw)
    # libipld's Rust base32 is ~30x faster than base64.b32encode, which is pure Python.
    return libipld.encode_multibase("b", raw)


def cid_bytes_for(data: bytes) -> bytes:
    """Return the binary CIDv1 (dag-cbor, sha2-256) of a DAG-CBOR block."""
    return DAG_CBOR_SHA256_PREFIX + hashlib.sha256(data).digest()


def cid_for(data: bytes) -> str:
    """Return the CIDv1 string (dag-cbor, sha2-256, "bafyrei...") of a DAG-CBOR block."""
    return cid_str(DAG_CBOR_SHA256_PREFIX + hashlib.sha256(data).digest())


def decode(data: bytes) -> Any:
    """Decode one DAG-CBOR object; links become `CID`, byte strings stay `bytes`."""
    try:
        obj = libipld.decode_dag_cbor(data)
    except (ValueError, RecursionError, TypeError) as exc:
        raise CborError(f"invalid DAG-CBOR: {exc}") from None
    if _TAG42 in data:
        return _mark_links(obj, data)
    return obj


def mark_links(obj: Any, data: bytes) -> Any:
    """Wrap in `CID` the links of `obj`, which libipld decoded from `data` (as `decode` does)."""
    return _mark_links(obj, data) if _TAG42 in data else obj


def encode(obj: Any) -> bytes:
    """Encode an object as DAG-CBOR; `CID` values (and bytes that parse as a CID) become links."""
    try:
        return libipld.encode_dag_cbor(obj)
    except (ValueError, RecursionError, TypeError) as exc:
        raise CborError(f"cannot encode as DAG-CBOR: {exc}") from None


def encode_head(major: int, n: int) -> bytes:
    """Encode a CBOR head (major type bits, argument) in the shortest form, as DAG-CBOR requires."""
    if n < 24:
        return bytes([major | n])
    if n < 0x100:
        return bytes([major | 24, n])
    if n < 0x10000:
        return bytes([major | 25]) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes([major | 26]) + n.to_bytes(4, "big")
    return bytes([major | 27]) + n.to_bytes(8, "big")


def encode_link(cid: bytes | None) -> bytes:
    """Encode a nullable binary CID as a DAG-CBOR link (tag 42, 0x00 multibase prefix)."""
    if cid is None:
        return b"\xf6"
    return b"\xd8\x2a" + encode_head(0x40, len(cid) + 1) + b"\0" + cid


def encode_text(text: str) -> bytes:
    """Encode a CBOR text string."""
    raw = text.encode()
    return encode_head(0x60, len(raw)) + raw


def _is_link(value: bytes, data: bytes) -> bool:
    """Tell whether `value` appeared in `data` as a tag-42 link rather than a byte string."""
    if not value:
        return False
    return _TAG42 + encode_head(0x40, len(value) + 1) + b"\0" + value in data


def _mark_links(obj: Any, data: bytes) -> Any:
    """Wrap every link inside a decoded object in `CID`."""
    if isinstance(obj, bytes):
        return CID(obj) if _is_link(obj, data) else obj
    if isinstance(obj, dict):
        return {k: _mark_links(v, data) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mark_links(v, data) for v in obj]
    return obj


def _b64(data: bytes) -> str:
    """Base64 (standard alphabet) without padding, as the atproto data model requires."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def to_json_model(obj: Any) -> Any:
    """Convert a decoded object to the AT Protocol JSON data model ($link / $bytes)."""
    if isinstance(obj, dict):
        return {k: to_json_model(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_json_model(v) for v in obj]
    if isinstance(obj, CID):
        return {"$link": cid_str(obj)}
    if isinstance(obj, bytes):
        return {"$bytes": _b64(obj)}
    return obj


def from_json_model(obj: Any) -> Any:
    """Convert AT Protocol JSON data model values ($link / $bytes) to encodable objects."""
    if isinstance(obj, dict):
        if len(obj) == 1:
            if isinstance(link := obj.get("$link"), str):
                return CID.from_str(link)
            if isinstance(b64 := obj.get("$bytes"), str):
                return base64.b64decode(b64 + "=" * (-len(b64) % 4))
        return {k: from_json_model(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json_model(v) for v in obj]
    return obj


def to_json_bytes(obj: Any) -> bytes:
    """Serialise a decoded object as JSON in the AT Protocol data model."""
    try:
        # Most records hold no links or bytes: orjson serialises them as they are, and refuses
        # (JSONEncodeError) exactly the bytes/CID values that need the $link/$bytes conversion.
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return orjson.dumps(to_json_model(obj))
