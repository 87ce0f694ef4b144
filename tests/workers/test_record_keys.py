"""Record keys over 512 characters (or outside the charset) are never written for indexing.

The backfiller's side (a bad key in a repo: that record dead-lettered, the rest written) runs
as a process in test_hostile_peers.py; here: the syntax rule on the interop vectors, and the
ingester's side on a real relay #commit frame whose op is given a bad key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from atp.frames import CommitFrame, RepoOp, decode_frame, encode_frame
from atp.syntax import is_record_key
from tests._support import byte_fields
from workers.ingester.firehose import FirehoseConverter

pytestmark = pytest.mark.anyio


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]


def test_record_key_rule(atproto_data: Path) -> None:
    folder = atproto_data / "interop" / "syntax"
    assert all(is_record_key(k) for k in _lines(folder / "recordkey_syntax_valid.txt"))
    assert not any(is_record_key(k) for k in _lines(folder / "recordkey_syntax_invalid.txt"))
    assert is_record_key("a" * 512) and not is_record_key("a" * 513)
    assert not is_record_key(".") and not is_record_key("..") and not is_record_key("")


def _commit(atproto_data: Path) -> CommitFrame:
    data = (atproto_data / "firehose/jetstream_relay_frames.bin").read_bytes()
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "little")
        frame = decode_frame(data[offset + 4 : offset + 4 + length])
        if isinstance(frame, CommitFrame) and frame.ops and frame.ops[0].action == "create":
            return frame
        offset += 4 + length
    raise AssertionError("no create commit in the relay frames")


@pytest.mark.parametrize("rkey", ["k" * 513, "has space", "..", "a/b"])
async def test_firehose_commit_with_an_invalid_record_key_is_dead_lettered(
    atproto_data: Path, rkey: str
) -> None:
    frame = _commit(atproto_data)
    converter = FirehoseConverter("relay.test", "firehose_live", "repo_backfill", identities=None)
    fine = await converter.convert(encode_frame(frame))
    assert fine.entries and not fine.extra
    op = frame.ops[0]
    collection = op.path.partition("/")[0]
    bad = dataclasses.replace(frame, ops=[RepoOp(op.action, f"{collection}/{rkey}", op.cid, op.prev)])
    out = await converter.convert(encode_frame(bad))
    assert out.entries == [] and out.seq == frame.seq  # nothing indexed, the cursor moves past it
    [(stream, letter)] = out.extra
    fields = byte_fields(letter)
    assert stream == "firehose_live:dlq" and fields[b"reason"] == b"unverifiable-commit"
    assert fields[b"error"].decode().startswith(("InvalidRecordKey", "FrameError"))
