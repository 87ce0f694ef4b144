"""Signatures and did:key (interop crypto vectors, a real label), identifier syntax vectors, TIDs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from atp import cbor, syntax
from atp.crypto import Curve, PublicKey, SigningKey, b58decode, parse_did_key, verify
from atp.errors import DidKeyError, InvalidSyntax, InvalidTid, SignatureError
from atp.tid import TidClock, decode_tid, encode_tid, tid_from_time, tid_timestamp_us


def _b64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def test_signature_fixtures(atproto_data: Path) -> None:
    for case in json.loads((atproto_data / "interop/crypto/signature-fixtures.json").read_text()):
        key = parse_did_key(case["publicKeyDid"])
        curve = {"ES256": "p256", "ES256K": "secp256k1"}[case["algorithm"]]
        assert key.curve == curve
        assert parse_did_key(case["publicKeyMultibase"], legacy_curve=curve).compressed() == key.compressed()
        if case["validSignature"]:
            verify(key, _b64(case["messageBase64"]), _b64(case["signatureBase64"]))
        else:
            with pytest.raises(SignatureError):
                verify(key, _b64(case["messageBase64"]), _b64(case["signatureBase64"]))


def test_w3c_did_keys(atproto_data: Path) -> None:
    for case in json.loads((atproto_data / "interop/crypto/w3c_didkey_K256.json").read_text()):
        key = SigningKey.from_private_bytes("secp256k1", bytes.fromhex(case["privateKeyBytesHex"]))
        assert key.did_key() == case["publicDidKey"]
        assert parse_did_key(case["publicDidKey"]).compressed() == key.public_key.compressed()
    for case in json.loads((atproto_data / "interop/crypto/w3c_didkey_P256.json").read_text()):
        key = SigningKey.from_private_bytes("p256", b58decode(case["privateKeyBytesBase58"]))
        assert key.did_key() == case["publicDidKey"]


@pytest.mark.parametrize("curve", ["secp256k1", "p256"])
def test_sign_is_low_s_and_seeded_keys_are_deterministic(curve: Curve) -> None:
    key = SigningKey.generate(curve, seed=b"devnet-1")
    assert key.did_key() == SigningKey.generate(curve, seed=b"devnet-1").did_key()
    assert key.did_key() != SigningKey.generate(curve, seed=b"devnet-2").did_key()
    assert key.did_key().startswith("did:key:zQ3s" if curve == "secp256k1" else "did:key:zDn")
    for i in range(40):  # half of raw ECDSA signatures are high-S; all of ours must pass the strict check
        sig = key.sign(b"msg %d" % i)
        assert len(sig) == 64
        verify(key.public_key, b"msg %d" % i, sig)
    with pytest.raises(SignatureError):
        verify(key.public_key, b"other", key.sign(b"msg"))


def test_real_signed_label(atproto_data: Path) -> None:
    label = json.loads((atproto_data / "labels/indigo_signed_label.json").read_text())
    key = parse_did_key(
        (atproto_data / "labels/indigo_signed_label.signer_pubkey_multibase.txt").read_text().strip()
    )
    sig = _b64(label.pop("sig")["$bytes"])
    verify(key, cbor.encode(label), sig)
    label["val"] = "other"
    with pytest.raises(SignatureError):
        verify(key, cbor.encode(label), sig)


def test_did_doc_key_selection(atproto_data: Path) -> None:
    for name in ("indigo_did_plc_doc.json", "indigo_did_plc_doc_legacy.json"):
        doc = json.loads((atproto_data / "identity" / name).read_text())
        assert PublicKey.from_did_doc(doc).curve == "secp256k1"
    with pytest.raises(DidKeyError):
        PublicKey.from_did_doc(json.loads((atproto_data / "identity/indigo_did_web_doc.json").read_text()))
    with pytest.raises(DidKeyError):
        parse_did_key("did:key:z0OIl")


def _lines(path: Path) -> list[str]:
    return [
        line for line in path.read_text(encoding="utf-8").split("\n") if line and not line.startswith("#")
    ]


SYNTAX = {
    "did": syntax.validate_did,
    "handle": syntax.validate_handle,
    "nsid": syntax.validate_nsid,
    "recordkey": syntax.validate_record_key,
    "tid": syntax.validate_tid,
    "aturi": syntax.validate_at_uri,
    "cid": syntax.validate_cid,
}


@pytest.mark.parametrize("kind", sorted(SYNTAX))
def test_syntax_vectors(atproto_data: Path, kind: str) -> None:
    validate = SYNTAX[kind]
    valid = _lines(atproto_data / f"interop/syntax/{kind}_syntax_valid.txt")
    invalid = _lines(atproto_data / f"interop/syntax/{kind}_syntax_invalid.txt")
    assert valid and invalid
    for text in valid:
        validate(text)
    for text in invalid:
        with pytest.raises(InvalidSyntax):
            validate(text)


def test_tid_vectors(atproto_data: Path) -> None:
    for text in _lines(atproto_data / "interop/syntax/tid_syntax_valid.txt"):
        assert encode_tid(decode_tid(text)) == text
    for text in _lines(atproto_data / "interop/syntax/tid_syntax_invalid.txt"):
        with pytest.raises(InvalidTid):
            decode_tid(text)


def test_tid_clock_is_monotonic_and_deterministic() -> None:
    start = 1_700_000_000_000_000
    first = [TidClock(3, start_us=start).next() for _ in range(2)]
    assert first[0] == first[1] == tid_from_time(start, 3)
    clock = TidClock(3, start_us=start)
    tids = [clock.next() for _ in range(1000)]
    assert tids == sorted(tids) and len(set(tids)) == 1000
    assert tid_timestamp_us(tids[-1]) == start + 999
    wall = TidClock()
    live = [wall.next() for _ in range(1000)]
    assert live == sorted(live) and len(set(live)) == 1000
    for text in tids[:5] + live[:5]:
        syntax.validate_tid(text)


def _openssl_accepts(key: PublicKey, data: bytes, sig: bytes) -> bool:
    """The reference: OpenSSL's ECDSA check of r||s (plus atproto's low-S rule)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if s > _SECP256K1_ORDER // 2:
        return False
    try:
        key.key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_secp256k1_fast_path_agrees_with_openssl() -> None:
    """secp256k1 signatures are checked by libsecp256k1 (coincurve): same verdicts as OpenSSL."""
    import random

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    key = SigningKey.generate("secp256k1", seed=rng.randbytes(8))
    for i in range(300):
        data = rng.randbytes(rng.randrange(1, 300))
        sig = bytearray(key.sign(data))
        mutation = i % 5
        if mutation == 1:  # a flipped bit anywhere
            sig[rng.randrange(64)] ^= 1 << rng.randrange(8)
        elif mutation == 2:  # r or s at or above the curve order
            half = rng.choice((0, 32))
            sig[half : half + 32] = (_SECP256K1_ORDER + rng.randrange(3)).to_bytes(32, "big")
        elif mutation == 3:  # another message
            data += b"!"
        expected = _openssl_accepts(key.public_key, data, bytes(sig))
        try:
            verify(key.public_key, data, bytes(sig))
            got = True
        except SignatureError:
            got = False
        assert got == expected, f"seed {seed}, case {i} (mutation {mutation})"


_SECP256K1_P = 2**256 - 2**32 - 977


def _openssl_point(point: bytes) -> bytes | None:
    """The reference: the compressed point OpenSSL (`cryptography`) reads from `point`, or None."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), point)
    except ValueError:
        return None
    return key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


def test_secp256k1_points_read_as_openssl_reads_them() -> None:
    """secp256k1 points are parsed by libsecp256k1 (coincurve): the same points accepted as by
    OpenSSL, and the same refused (hybrid forms, x >= p, off the curve, bad lengths, infinity)."""
    import random

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for i in range(300):
        key = SigningKey.generate("secp256k1", seed=rng.randbytes(8)).public_key
        form = PublicFormat.CompressedPoint if i % 2 else PublicFormat.UncompressedPoint
        point = bytearray(key.key.public_bytes(Encoding.X962, form))
        mutation = i % 7
        if mutation == 1:  # a flipped bit past the tag: another x (half are on the curve), or off it
            point[rng.randrange(1, len(point))] ^= 1 << rng.randrange(8)
        elif mutation == 2:  # a hybrid (0x06/0x07) or unknown tag
            point[0] = rng.choice((0x00, 0x01, 0x05, 0x06, 0x07))
        elif mutation == 3:  # x at or above the field prime
            point[1:33] = (_SECP256K1_P + rng.randrange(3)).to_bytes(32, "big")
        elif mutation == 4:  # one byte too many or too few
            point = point + b"\x01" if rng.random() < 0.5 else point[:-1]
        elif mutation == 5:  # the point at infinity, or nothing
            point = bytearray(rng.choice((b"\x00", b"")))
        expected = _openssl_point(bytes(point))
        try:
            parsed = PublicKey.from_bytes("secp256k1", bytes(point))
        except DidKeyError:
            got = None
        else:
            got = parsed.compressed()
            assert parsed.key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint) == got
        assert got == expected, f"seed {seed}, case {i} (mutation {mutation})"
