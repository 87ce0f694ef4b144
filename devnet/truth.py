"""Ground truth: what a perfect backfill plus firehose consumer should hold right now.

JSON lines, in this order: one `repo` line per account (status active / takendown / deactivated /
deleted), one `record` line per record of every active repo (`rev` = rev of the commit that last
wrote it), one `label` line per live label (not negated, not expired).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from atp.cbor import cid_str
from devnet.state import World

__all__ = ["truth_lines", "write_truth"]


def _repo_lines(world: World) -> list[dict[str, Any]]:
    return [{"type": "repo", "did": a.did, "rev": a.rev, "status": a.truth_status} for a in world.accounts]


def _record_lines(world: World) -> list[dict[str, Any]]:
    lines = []
    for account in world.accounts:
        if not account.active:
            continue
        for path in sorted(account.records):
            ref = account.records[path]
            collection, _, rkey = path.partition("/")
            lines.append(
                {
                    "type": "record",
                    "did": account.did,
                    "collection": collection,
                    "rkey": rkey,
                    "cid": cid_str(ref.cid),
                    "rev": ref.rev,
                }
            )
    return lines


def _label_lines(world: World) -> list[dict[str, Any]]:
    now = world.clock.iso()
    live = [label for _, label in sorted(world.live_labels.items()) if label.exp is None or label.exp > now]
    return [{"type": "label", "src": lb.src, "uri": lb.uri, "val": lb.val, "cts": lb.cts} for lb in live]


def truth_lines(world: World) -> list[dict[str, Any]]:
    """The whole ground truth as dicts (take it without awaiting in between: it is one snapshot)."""
    return _repo_lines(world) + _record_lines(world) + _label_lines(world)


def write_truth(world: World, path: str | os.PathLike[str]) -> int:
    """Write the truth as JSON lines (atomically: temp file then rename); return the line count."""
    lines = truth_lines(world)
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as out:
        for line in lines:
            out.write(orjson.dumps(line) + b"\n")
    tmp.replace(target)
    return len(lines)
