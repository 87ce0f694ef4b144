"""Finding Captain's Log files in a stable order and turning them into documents."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from tests.replayer._files import write_capture, write_raw, write_reflection
from workers.replayer.documents import CAPTURE, REFLECTION, MalformedFile, find_files, read_document


def test_files_are_found_in_mtime_then_path_order(tmp_path: Path) -> None:
    write_capture(tmp_path, "b", "2026-02-22T10:00:00Z", mtime=200)
    write_capture(tmp_path, "a", "2026-02-22T10:00:00Z", mtime=200)
    write_reflection(tmp_path, "r1", "2026-02-21T10:00:00Z", mtime=100)
    write_raw(tmp_path / "captures" / "2026-02-22" / "notes.txt", "not a capture", mtime=50)
    write_raw(tmp_path / "other.json", "{}", mtime=50)  # neither a capture nor CL-*.json
    found = find_files(tmp_path)
    assert [(f.rel, f.kind) for f in found] == [
        ("CL-r1.json", REFLECTION),
        ("captures/2026-02-22/a.json", CAPTURE),
        ("captures/2026-02-22/b.json", CAPTURE),
    ]


def test_capture_becomes_a_compact_document_in_its_daily_index_with_every_field(tmp_path: Path) -> None:
    write_capture(tmp_path, "t-1", "2026-02-22T23:30:00-05:00", extra_field={"nested": [1, 2]}, user="x")
    (f,) = find_files(tmp_path)
    doc = read_document(tmp_path, f, run=7)
    # 23:30 at UTC-5 is the 23rd in UTC: daily indices are UTC days.
    assert doc.index == "agent-captains-captures-2026-02-23"
    assert (doc.doc_id, doc.kind, doc.run, doc.path) == ("t-1", CAPTURE, 7, "captures/2026-02-22/t-1.json")
    assert b"\n" not in bytes(doc.body)
    assert msgspec.json.decode(bytes(doc.body)) == {
        "trace_id": "t-1",
        "timestamp": "2026-02-22T23:30:00-05:00",
        "extra_field": {"nested": [1, 2]},
        "user": "x",
    }
    assert (doc.mtime_ns, doc.size) == (f.mtime_ns, f.size)


def test_reflection_uses_entry_id_and_naive_timestamps_are_utc(tmp_path: Path) -> None:
    write_reflection(tmp_path, "e-9", "2026-02-21T10:00:00.123456")
    (f,) = find_files(tmp_path)
    doc = read_document(tmp_path, f, run=1)
    assert (doc.doc_id, doc.index) == ("e-9", "agent-captains-reflections-2026-02-21")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"timestamp": "2026-02-22T10:00:00Z"}', "trace_id"),
        ('{"trace_id": "x"}', "timestamp"),
        ('{"trace_id": 5, "timestamp": "2026-02-22T10:00:00Z"}', "Expected `str`"),
        ('{"trace_id": "  ", "timestamp": "2026-02-22T10:00:00Z"}', "empty document id"),
        ('{"trace_id": "x", "timestamp": "yesterday"}', "not ISO 8601"),
        ('{"trace_id": "' + "x" * 600 + '", "timestamp": "2026-02-22T10:00:00Z"}', "longer than 512 bytes"),
        ("", "not valid JSON"),
    ],
)
def test_malformed_files_are_refused_with_file_level_context(tmp_path: Path, text: str, message: str) -> None:
    write_raw(tmp_path / "captures" / "2026-02-22" / "bad.json", text)
    (f,) = find_files(tmp_path)
    with pytest.raises(MalformedFile) as err:
        read_document(tmp_path, f, run=1)
    assert "captures/2026-02-22/bad.json" in str(err.value)
    assert message in str(err.value)


def test_a_file_name_that_is_not_utf8_is_skipped_not_fatal(tmp_path: Path) -> None:
    write_capture(tmp_path, "ok", "2026-02-22T10:00:00Z")
    day = tmp_path / "captures" / "2026-02-22"
    (day / os.fsdecode(b"bad-\xff.json")).write_text("{}")
    assert [f.rel for f in find_files(tmp_path)] == ["captures/2026-02-22/ok.json"]
