"""Saved example payloads of every stream contract keep decoding (new fields have defaults), and
entries that break a contract are refused with SchemaError (dead-lettered by the consumers)."""

from __future__ import annotations

import pytest

from schemas import (
    REGISTRY,
    CaptainsLogDoc,
    CaptainsLogResult,
    LabelBatch,
    RecordCreate,
    RecordDelete,
    RepoJob,
    RepoMarker,
    SchemaError,
    contract_for,
    decode_entry,
    encode_entry,
)

# Payloads as earlier versions wrote them. Never edit one: add a new one next to it.
SAVED: list[tuple[str, bytes, bytes, type]] = [
    ("repo_backfill", b"repo", b'{"did":"did:plc:abc","host":"bsky.network"}', RepoJob),
    (
        "repo_backfill",
        b"repo",
        b'{"did":"did:plc:abc","host":"h","rev":"3l","status":"takendown","active":false,"reason":"recheck"}',
        RepoJob,
    ),
    (
        "firehose_live",
        b"event",
        b'{"type":"create","seq":7,"did":"did:plc:a","rev":"3k","collection":"app.bsky.feed.post","rkey":"3k2",'
        b'"cid":"bafyrei","record":{"text":"hi","$type":"app.bsky.feed.post"}}',
        RecordCreate,
    ),
    (
        "firehose_live",
        b"event",
        b'{"type":"delete","seq":8,"did":"did:plc:a","rev":"3k","collection":"app.bsky.feed.like","rkey":"x"}',
        RecordDelete,
    ),
    (
        "firehose_backfill",
        b"event",
        b'{"type":"repo","seq":-1,"did":"did:plc:a","rev":"3k","commit":"bafyrei","records":3}',
        RepoMarker,
    ),
    (
        "label_live",
        b"labels",
        b'{"seq":1,"labels":[{"src":"did:plc:l","uri":"at://did:plc:a","val":"spam","cts":"2024-01-01T00:00:00Z"}]}',
        LabelBatch,
    ),
    # The first captains_log layout, before run / mtime_ns / size.
    (
        "captains_log",
        b"doc",
        b'{"kind":"capture","doc_id":"t-1","index":"agent-captains-captures-2026-02-22",'
        b'"path":"captures/2026-02-22/t-1.json","body":{"trace_id":"t-1","timestamp":"2026-02-22T10:00:00Z"}}',
        CaptainsLogDoc,
    ),
    (
        "captains_log_results",
        b"result",
        b'{"kind":"reflection","doc_id":"e","index":"agent-captains-reflections-2026-02-22","path":"CL-e.json",'
        b'"run":3,"mtime_ns":1,"size":2,"status":"indexed"}',
        CaptainsLogResult,
    ),
    # With the backfill campaign tag (issue #15).
    (
        "repo_backfill",
        b"repo",
        b'{"did":"did:plc:abc","host":"h","reason":"campaign","campaign":"spring"}',
        RepoJob,
    ),
    (
        "firehose_backfill",
        b"event",
        b'{"type":"create","seq":-1,"did":"did:plc:a","rev":"3k","collection":"app.bsky.feed.post","rkey":"3k2",'
        b'"cid":"bafyrei","record":{"text":"hi"},"campaign":"spring"}',
        RecordCreate,
    ),
    (
        "firehose_backfill",
        b"event",
        b'{"type":"repo","seq":-1,"did":"did:plc:a","rev":"3k","commit":"bafyrei","records":3,"campaign":"spring"}',
        RepoMarker,
    ),
]


@pytest.mark.parametrize(("stream", "field", "payload", "kind"), SAVED)
def test_saved_payloads_decode_and_round_trip(stream: str, field: bytes, payload: bytes, kind: type) -> None:
    message = decode_entry(stream, {field: payload})
    assert isinstance(message, kind)
    assert decode_entry(stream, encode_entry(stream, message)) == message


def test_every_registered_stream_has_a_saved_payload() -> None:
    assert {s for s, *_ in SAVED} == set(REGISTRY)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({b"other": b"{}"}, "has no 'doc' field"),
        ({b"doc": b"{not json"}, "malformed JSON"),
        ({b"doc": b'{"kind":"capture"}'}, "invalid 'doc'"),
    ],
)
def test_broken_entries_are_schema_errors(fields: dict[bytes, bytes], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        decode_entry("captains_log", fields)


def test_prefixed_stream_names_find_their_contract() -> None:
    assert isinstance(decode_entry("t42:captains_log", {b"doc": SAVED[6][2]}), CaptainsLogDoc)


def test_contracts_are_found_by_name_never_by_parsing_a_key() -> None:
    assert contract_for("captains_log") is REGISTRY["captains_log"]
    for key in ("t42:captains_log", "t42:{captains_log:0}", "captains_log:dlq"):
        with pytest.raises(SchemaError, match="no contract registered"):
            contract_for(key)


def test_campaign_tag_defaults_to_none_and_travels() -> None:
    old = decode_entry("repo_backfill", {b"repo": SAVED[0][2]})
    assert old.campaign is None
    tagged = decode_entry("firehose_backfill", {b"event": SAVED[-1][2]})
    assert isinstance(tagged, RepoMarker)
    assert tagged.campaign == "spring"
