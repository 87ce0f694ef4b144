"""Event-stream frames: 150 real relay frames, relay scenarios, real #commit bodies, malformed input."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from atp import cbor
from atp.crypto import PublicKey, SigningKey, parse_did_key
from atp.errors import CarBlockMismatchError, CommitError, FrameError, SignatureError
from atp.frames import (
    AccountFrame,
    CommitFrame,
    ErrorFrame,
    Frame,
    IdentityFrame,
    InfoFrame,
    LabelsFrame,
    SyncFrame,
    UnknownFrame,
    commit_ops,
    decode_frame,
    encode_frame,
)


def _frames(atproto_data: Path) -> Iterator[bytes]:
    data = (atproto_data / "firehose/jetstream_relay_frames.bin").read_bytes()
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "little")
        yield data[offset + 4 : offset + 4 + length]
        offset += 4 + length


def test_relay_frames_decode_verify_and_match_jetstream(atproto_data: Path) -> None:
    folder = atproto_data / "firehose"
    docs = json.loads((folder / "jetstream_relay_frames.did_docs.json").read_text())
    expected = {}
    for line in (folder / "jetstream_relay_frames.expected_jetstream_v1.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "commit":
            c = event["commit"]
            expected[(event["did"], c["rev"], c["collection"], c["rkey"])] = c
    frames = [decode_frame(raw) for raw in _frames(atproto_data)]
    assert Counter(type(f).__name__ for f in frames) == {
        "CommitFrame": 148,
        "IdentityFrame": 1,
        "AccountFrame": 1,
    }
    matched = 0
    for frame in frames:
        assert decode_frame(encode_frame(frame)) == frame
        if not isinstance(frame, CommitFrame):
            continue
        for op in commit_ops(frame, signing_key=PublicKey.from_did_doc(docs[frame.repo])):
            want = expected.pop((frame.repo, frame.rev, op.collection, op.rkey))
            assert want["operation"] == op.action
            if op.action != "delete":
                assert (want["cid"], want["record"]) == (op.cid, cbor.to_json_model(op.record))
            matched += 1
    assert matched == 150 and not expected


def test_commit_signature_and_blocks_are_checked(atproto_data: Path) -> None:
    frame = next(f for f in map(decode_frame, _frames(atproto_data)) if isinstance(f, CommitFrame))
    with pytest.raises(SignatureError):
        commit_ops(frame, signing_key=SigningKey.generate(seed=b"not-them").public_key)
    tampered = bytearray(frame.blocks)
    tampered[-3] ^= 1
    with pytest.raises(CarBlockMismatchError):
        commit_ops(dataclasses.replace(frame, blocks=bytes(tampered)))
    with pytest.raises(CommitError):
        commit_ops(dataclasses.replace(frame, repo="did:plc:someoneelse"))


def _scenario_frames(path: Path) -> Iterator[tuple[bytes, dict[str, object], PublicKey | None]]:
    scenario = json.loads(path.read_text())
    keys = {a["identity"]["did"]: a["identity"]["keys"]["atproto"]["publicKeyMultibase"]
            for a in scenario["accounts"] if a["identity"].get("keys")}  # fmt: skip
    for message in scenario["messages"]:
        frame = message["frame"]
        raw = cbor.encode(frame["header"]) + cbor.encode(cbor.from_json_model(frame["body"]))
        did = frame["body"].get("repo") or frame["body"].get("did")
        yield raw, message, parse_did_key(keys[did]) if did in keys else None


def test_relay_scenarios(atproto_data: Path) -> None:
    kinds: Counter[str] = Counter()
    for path in sorted((atproto_data / "firehose").glob("indigo_relay_scenario_*.json")):
        for raw, message, key in _scenario_frames(path):
            frame = decode_frame(raw)
            kinds[type(frame).__name__] += 1
            if isinstance(frame, CommitFrame):
                try:
                    commit_ops(frame, signing_key=key)
                except CommitError:
                    assert message["drop"], path.name  # the relay drops these (rev mismatch)
            elif isinstance(frame, SyncFrame):
                assert frame.blocks and frame.rev
    assert kinds["SyncFrame"] == 1 and kinds["CommitFrame"] >= 20
    assert kinds["IdentityFrame"] and kinds["AccountFrame"]


def test_indigo_commit_bodies(atproto_data: Path) -> None:
    counts = []
    for path in sorted((atproto_data / "firehose").glob("indigo_firehose_commit_*.json")):
        body = cbor.from_json_model(json.loads(path.read_text()))
        frame = decode_frame(cbor.encode({"op": 1, "t": "#commit"}) + cbor.encode(body))
        assert isinstance(frame, CommitFrame)
        counts.append(len(commit_ops(frame)))
    assert counts == [1, 1, 42, 1]


def test_other_frame_kinds_round_trip(atproto_data: Path) -> None:
    label = cbor.from_json_model(json.loads((atproto_data / "labels/indigo_signed_label.json").read_text()))
    frames: list[Frame] = [
        LabelsFrame(seq=7, labels=[label]),
        InfoFrame("OutdatedCursor", "cursor too old"),
        ErrorFrame("FutureCursor", "cursor in the future"),
        IdentityFrame(1, "did:plc:abc", "2024-01-01T00:00:00Z", "alice.test"),
        AccountFrame(2, "did:plc:abc", "2024-01-01T00:00:00Z", False, "takendown"),
        SyncFrame(3, "did:plc:abc", "3kaaaaaaaaaa2", b"car", "2024-01-01T00:00:00Z"),
    ]
    for frame in frames:
        assert decode_frame(encode_frame(frame)) == frame
    unknown = decode_frame(cbor.encode({"op": 1, "t": "#brandNew"}) + cbor.encode({"x": 1}))
    assert unknown == UnknownFrame("#brandNew", {"x": 1})


MALFORMED = [
    b"",
    b"\xff\xff",
    cbor.encode({"op": 1, "t": "#commit"}),
    cbor.encode({"op": 1, "t": "#commit"}) + cbor.encode({"seq": 1}),
    cbor.encode({"op": 1}) + cbor.encode({}),
    cbor.encode({"op": 2, "t": "#info"}) + cbor.encode({"name": "x"}),
    cbor.encode([1]) + cbor.encode({}),
    cbor.encode({"op": 1, "t": "#identity"}) + cbor.encode({"seq": "1", "did": "d", "time": "t"}),
    cbor.encode({"op": 1, "t": "#labels"}) + cbor.encode({"seq": 1, "labels": [{"src": 1}]}),
    cbor.encode({"op": -1}) + cbor.encode({"message": "no error name"}),
    cbor.encode({"op": 1, "t": "#info"}) + cbor.encode({"name": "x"}) + cbor.encode({}),
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_frames(raw: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(raw)


def test_truncated_real_frames_never_crash(atproto_data: Path) -> None:
    raw = next(_frames(atproto_data))
    for cut in range(0, len(raw), 97):
        with pytest.raises(FrameError):
            decode_frame(raw[:cut])
