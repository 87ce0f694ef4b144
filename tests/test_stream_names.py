"""Stream names and key names come from `streams.StreamNames` and `streams.Keys` only.

The workers never spell a stream's name (`"firehose_live"`, `"repo_backfill:dlq"`) nor build a
dead-letter key by hand (`f"{stream}:dlq"`): they take `StreamNames.FIREHOSE_LIVE` and
`Keys.dlq(key)`, so that a name is defined in one place (streams/_keys.py) and a rename or a new
layout cannot miss a copy. schemas/ imports nothing of ours: its registry spells the names again,
and a test here checks both lists agree.
"""

from __future__ import annotations

import ast
from pathlib import Path

from schemas import REGISTRY
from streams import StreamNames

ROOT = Path(__file__).resolve().parents[1]
NAMES = frozenset(v for k, v in vars(StreamNames).items() if k.isupper() and isinstance(v, str))

# TODO(lead): after src merge: these files are being rewritten by another helper (the source
# interface, the run tracker); take them out of this set once that work is merged, and move
# their literals (listing.py: STREAM = "repo_backfill") to StreamNames.
EXEMPT = frozenset(
    {
        "workers/ingester/listing.py",
        "workers/ingester/eventstream.py",
        "workers/replayer/loops.py",
        "workers/replayer/service.py",
        "workers/replayer/ledger.py",
        "workers/replayer/fold.py",
        "workers/replayer/scan.py",
    }
)


def _names_spelled(source: str) -> list[str]:
    """`line: literal` for every stream name (or key under one) spelled out in `source`, and
    every f-string that builds a dead-letter key (`f"{stream}:dlq"`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in NAMES or any(node.value.startswith(f"{name}:") for name in NAMES):
                found.append(f"{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.JoinedStr) and node.values:
            last = node.values[-1]
            if isinstance(last, ast.Constant) and str(last.value).endswith(":dlq"):
                found.append(f"{node.lineno}: an f-string ending in ':dlq'")
    return found


def test_workers_take_stream_names_from_stream_names_and_keys() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{hit}"
        for path in sorted((ROOT / "workers").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in EXEMPT
        for hit in _names_spelled(path.read_text())
    ]
    assert found == [], "use streams.StreamNames / Keys instead of spelling stream names"


def test_the_scan_finds_what_it_forbids() -> None:
    source = '''
STREAM = "firehose_live"
DLQ = "repo_backfill:dlq"
GROUP = "firehose_group"  # a group's name is not a stream's


def dlq(stream: str) -> str:
    """The firehose_live stream's dead letters (prose may name a stream)."""
    return f"{stream}:dlq"
'''
    assert _names_spelled(source) == [
        "2: 'firehose_live'",
        "3: 'repo_backfill:dlq'",
        "9: an f-string ending in ':dlq'",
    ]


def test_every_exempt_file_still_exists() -> None:
    """An exemption outlives no file: once one moves or goes, its entry must go too."""
    assert sorted(p for p in EXEMPT if not (ROOT / p).is_file()) == []


def test_the_schemas_registry_names_the_same_streams() -> None:
    assert set(REGISTRY) == NAMES
