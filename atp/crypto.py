"""atproto signing keys: secp256k1 (K-256) and P-256 ECDSA, low-S 64-byte signatures, did:key.

Signatures are ECDSA over sha256(data), encoded as r||s (32 bytes each) with s normalised to the
low half of the curve order; atproto rejects high-S and DER signatures. Public keys travel as
`did:key:z...` (multibase base58btc of a multicodec-prefixed compressed point).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import coincurve
from coincurve.ecdsa import cdata_to_der, deserialize_compact
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from atp.errors import DidKeyError, SignatureError

__all__ = ["Curve", "PublicKey", "SigningKey", "b58decode", "b58encode", "parse_did_key", "verify"]

Curve = Literal["secp256k1", "p256"]

_CURVES: dict[str, ec.EllipticCurve] = {"secp256k1": ec.SECP256K1(), "p256": ec.SECP256R1()}
_ORDER = {
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}
# Multicodec varint prefixes: secp256k1-pub = 0xe7, p256-pub = 0x1200.
_PREFIX = {"secp256k1": b"\xe7\x01", "p256": b"\x80\x24"}
# The SEC1 point forms `cryptography` reads (compressed, uncompressed): libsecp256k1 also reads the
# "hybrid" forms (0x06, 0x07), which are left to `cryptography` to refuse, as before.
_SEC1_TAGS = (b"\x02", b"\x03", b"\x04")
# Legacy DID documents name the curve in the verification method type instead of a multicodec prefix.
_LEGACY_TYPES = {
    "EcdsaSecp256k1VerificationKey2019": "secp256k1",
    "EcdsaSecp256r1VerificationKey2019": "p256",
}

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def b58encode(data: bytes) -> str:
    """Encode bytes as base58btc (bitcoin alphabet)."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Decode a base58btc string; raises DidKeyError on a bad character."""
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise DidKeyError(f"invalid base58 character {c!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


class PublicKey:
    """An ECDSA public key on secp256k1 or P-256 (equal when the curve and the point are).

    A secp256k1 key read from bytes is held in libsecp256k1's form (coincurve): parsing it there
    costs ~5 µs against ~25 µs for OpenSSL's, and verifying ~35 µs against ~300 µs, which is most
    of a small repo's CPU in the backfiller. The `cryptography` form, `key`, is built on first use.
    """

    __slots__ = ("_key", "_secp", "curve")

    def __init__(
        self,
        curve: Curve,
        key: ec.EllipticCurvePublicKey | None = None,
        *,
        secp: coincurve.PublicKey | None = None,
    ) -> None:
        if key is None and secp is None:
            raise ValueError("PublicKey needs a key")
        self.curve: Curve = curve
        self._key = key
        self._secp = secp

    @property
    def key(self) -> ec.EllipticCurvePublicKey:
        """The key as a `cryptography` public key."""
        if self._key is None:
            self._key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[self.curve], self.compressed())
        return self._key

    def secp256k1(self) -> coincurve.PublicKey:
        """The key as a coincurve (libsecp256k1) public key (secp256k1 keys only)."""
        if self._secp is None:
            self._secp = coincurve.PublicKey(self.compressed())
        key: coincurve.PublicKey = self._secp
        return key

    @classmethod
    def from_bytes(cls, curve: Curve, point: bytes) -> PublicKey:
        """Load a compressed or uncompressed SEC1 point."""
        try:
            if curve == "secp256k1" and point[:1] in _SEC1_TAGS:
                return cls(curve, secp=coincurve.PublicKey(point))  # not on the curve: ValueError
            return cls(curve, ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve], point))
        except (ValueError, KeyError) as exc:
            raise DidKeyError(f"invalid {curve} public key: {exc}") from None

    def compressed(self) -> bytes:
        """Return the 33-byte compressed point."""
        if self._secp is not None:
            point: bytes = self._secp.format(compressed=True)
            return point
        return self.key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self.curve == other.curve and self.compressed() == other.compressed()

    def __hash__(self) -> int:
        return hash((self.curve, self.compressed()))

    def __repr__(self) -> str:
        return f"PublicKey({self.curve!r}, {self.multibase()!r})"

    def multibase(self) -> str:
        """Return the multicodec-prefixed base58btc multibase form ("z...")."""
        return "z" + b58encode(_PREFIX[self.curve] + self.compressed())

    def did_key(self) -> str:
        """Return the did:key form."""
        return "did:key:" + self.multibase()

    @classmethod
    def from_did_doc(cls, doc: dict[str, Any]) -> PublicKey:
        """Pick the `#atproto` verification method of a DID document."""
        did = doc.get("id", "")
        for method in doc.get("verificationMethod") or []:
            mid = method.get("id", "")
            if mid == "#atproto" or mid == f"{did}#atproto":
                multibase = method.get("publicKeyMultibase")
                if not isinstance(multibase, str):
                    raise DidKeyError("#atproto verification method has no publicKeyMultibase")
                return parse_did_key(multibase, legacy_curve=_LEGACY_TYPES.get(method.get("type", "")))
        raise DidKeyError(f"DID document {did!r} has no #atproto verification method")


def parse_did_key(text: str, *, legacy_curve: str | None = None) -> PublicKey:
    """Parse "did:key:z..." or a bare multibase "z..." key; `legacy_curve` reads unprefixed points."""
    body = text.removeprefix("did:key:")
    if not body.startswith("z"):
        raise DidKeyError(f"not a base58btc multibase key: {text!r}")
    raw = b58decode(body[1:])
    for curve, prefix in _PREFIX.items():
        if raw.startswith(prefix):
            return PublicKey.from_bytes(curve, raw[len(prefix) :])  # type: ignore[arg-type]
    if legacy_curve in _CURVES:
        return PublicKey.from_bytes(legacy_curve, raw)  # type: ignore[arg-type]
    raise DidKeyError(f"unsupported key type in {text!r}")


def verify(public_key: PublicKey, data: bytes, sig: bytes, *, allow_high_s: bool = False) -> None:
    """Verify a 64-byte low-S r||s signature over sha256(data); raise SignatureError if invalid."""
    if len(sig) != 64:
        raise SignatureError(f"signature must be 64 bytes (r||s), got {len(sig)}")
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if s > _ORDER[public_key.curve] // 2 and not allow_high_s:
        raise SignatureError("high-S signature rejected")
    if public_key.curve == "secp256k1" and not allow_high_s:
        _verify_secp256k1(public_key, data, sig)
        return
    try:
        public_key.key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


def _verify_secp256k1(public_key: PublicKey, data: bytes, sig: bytes) -> None:
    """libsecp256k1's verification (low-S only, which atproto requires anyway)."""
    try:
        der = cdata_to_der(deserialize_compact(sig))
    except ValueError:  # r or s not below the curve order
        raise SignatureError("signature does not verify") from None
    if not public_key.secp256k1().verify(der, data):
        raise SignatureError("signature does not verify")


class SigningKey:
    """An ECDSA private key that produces atproto signatures."""

    __slots__ = ("_key", "curve", "public_key")

    def __init__(self, curve: Curve, key: ec.EllipticCurvePrivateKey) -> None:
        self.curve = curve
        self._key = key
        self.public_key = PublicKey(curve, key.public_key())

    @classmethod
    def generate(cls, curve: Curve = "secp256k1", seed: bytes | None = None) -> SigningKey:
        """Create a key; with a seed the key is deterministic (devnet identities)."""
        if curve not in _CURVES:
            raise DidKeyError(f"unsupported curve {curve!r}")
        if seed is None:
            return cls(curve, ec.generate_private_key(_CURVES[curve]))
        digest = int.from_bytes(hashlib.sha256(b"streamfill-key:" + seed).digest(), "big")
        return cls(curve, ec.derive_private_key(digest % (_ORDER[curve] - 1) + 1, _CURVES[curve]))

    @classmethod
    def from_private_bytes(cls, curve: Curve, secret: bytes) -> SigningKey:
        """Load a raw 32-byte private scalar."""
        return cls(curve, ec.derive_private_key(int.from_bytes(secret, "big"), _CURVES[curve]))

    def private_bytes(self) -> bytes:
        """Return the raw 32-byte private scalar."""
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    def sign(self, data: bytes, *, deterministic: bool = False) -> bytes:
        """Sign sha256(data); return 64-byte r||s with low S. `deterministic`: an RFC 6979 nonce
        (same key and data, same signature: devnet's reproducible commits)."""
        algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=deterministic)
        r, s = decode_dss_signature(self._key.sign(data, algorithm))
        order = _ORDER[self.curve]
        if s > order // 2:
            s = order - s
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def did_key(self) -> str:
        """Return the public key as did:key."""
        return self.public_key.did_key()
