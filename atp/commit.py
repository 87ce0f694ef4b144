"""Repo commits: the signed object at the top of a repo (version 3, or legacy version 2).

`parse_commit` decodes and checks a commit block, `check_commit` its DID and signature,
`sign_commit` builds and signs a new one. The signature covers the canonical DAG-CBOR encoding of
the commit without `sig` (`Commit.unsigned_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import libipld

from atp.cbor import CID, cid_bytes_for, cid_str, encode_head, encode_link, encode_text
from atp.crypto import PublicKey, SigningKey, verify
from atp.errors import CommitError

__all__ = ["Commit", "check_commit", "parse_commit", "sign_commit"]


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


def sign_commit(
    did: str, data: str, *, rev: str, signing_key: SigningKey, prev: str | None = None
) -> tuple[str, bytes]:
    """Build and sign a version-3 commit; return (commit CID, commit block)."""
    data_cid = CID.from_str(data)
    prev_cid = CID.from_str(prev) if prev else None
    sig = signing_key.sign(_encode_commit(did, 3, data_cid, rev, prev_cid, None))
    block = _encode_commit(did, 3, data_cid, rev, prev_cid, sig)
    return cid_str(cid_bytes_for(block)), block
