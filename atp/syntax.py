"""Syntax checks for AT Protocol identifiers, following the specs and the interop test vectors.

Each `validate_*` returns None or raises the matching `Invalid*` error (all `InvalidSyntax`).
"""

from __future__ import annotations

import re

from atp.errors import (
    InvalidAtUri,
    InvalidCid,
    InvalidDid,
    InvalidHandle,
    InvalidNsid,
    InvalidRecordKey,
    InvalidTid,
)

__all__ = [
    "is_record_key",
    "validate_at_uri",
    "validate_cid",
    "validate_did",
    "validate_handle",
    "validate_nsid",
    "validate_record_key",
    "validate_tid",
]

_DID = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
_DID_MAX = 2048
_HANDLE = re.compile(
    r"([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+"
    r"[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
_HANDLE_MAX = 253
_NSID = re.compile(
    r"[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}"
)
_NSID_MAX = 317
_RKEY = re.compile(r"[a-zA-Z0-9_~.:-]{1,512}")
_TID = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
_CID = re.compile(r"[a-zA-Z0-9+=]{8,256}")
_AT_URI = re.compile(
    r"at://(?P<authority>[a-zA-Z0-9._:%-]+)"
    r"(/(?P<collection>[a-zA-Z0-9.-]+)(/(?P<rkey>[a-zA-Z0-9._~:@!$&%')(*+,;=-]+))?)?"
    r"(#(?P<fragment>/[a-zA-Z0-9._~:@!$&%')(*+,;=\-\[\]/\\]*))?"
)
_AT_URI_MAX = 8 * 1024


def validate_did(text: str) -> None:
    """Check DID syntax (method-agnostic)."""
    if len(text) > _DID_MAX or not _DID.fullmatch(text):
        raise InvalidDid(f"invalid DID: {text!r}")


def validate_handle(text: str) -> None:
    """Check handle syntax (a domain name whose last label does not start with a digit)."""
    if len(text) > _HANDLE_MAX or not _HANDLE.fullmatch(text):
        raise InvalidHandle(f"invalid handle: {text!r}")


def validate_nsid(text: str) -> None:
    """Check NSID syntax (reversed domain authority plus a name segment)."""
    if len(text) > _NSID_MAX or not _NSID.fullmatch(text):
        raise InvalidNsid(f"invalid NSID: {text!r}")


def is_record_key(text: str) -> bool:
    """Whether `text` is a valid record key: 1-512 of `A-Za-z0-9._:~-`, not "." or ".."."""
    return _RKEY.fullmatch(text) is not None and text != "." and text != ".."


def validate_record_key(text: str) -> None:
    """Check record key syntax."""
    if not is_record_key(text):
        raise InvalidRecordKey(f"invalid record key: {text[:600]!r}")


def validate_tid(text: str) -> None:
    """Check TID syntax (13 base32-sortable characters, top bit clear)."""
    if not _TID.fullmatch(text):
        raise InvalidTid(f"invalid TID: {text!r}")


def validate_cid(text: str) -> None:
    """Check CID string syntax (loose, as the spec asks; CIDv0 "Qmb..." is refused)."""
    if not _CID.fullmatch(text) or text.startswith("Qmb"):
        raise InvalidCid(f"invalid CID: {text!r}")


def validate_at_uri(text: str) -> None:
    """Check AT URI syntax: at://authority[/collection[/rkey]][#fragment]."""
    match = _AT_URI.fullmatch(text) if len(text) <= _AT_URI_MAX else None
    if match is None:
        raise InvalidAtUri(f"invalid AT URI: {text!r}")
    authority, collection = match["authority"], match["collection"]
    try:
        if authority.startswith("did:"):
            validate_did(authority)
        else:
            validate_handle(authority)
        if collection is not None:
            validate_nsid(collection)
        if match["rkey"] is not None:
            validate_record_key(match["rkey"])
    except (InvalidDid, InvalidHandle, InvalidNsid, InvalidRecordKey) as exc:
        raise InvalidAtUri(f"invalid AT URI {text!r}: {exc}") from None
