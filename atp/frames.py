"""Event-stream frames (subscribeRepos, subscribeLabels): decode, encode, and read a commit's ops.

A frame is two concatenated DAG-CBOR objects: a header `{op: 1, t: "#commit"}` and a body, or an
error header `{op: -1}` with body `{error, message}`. `decode_frame` returns one of the typed
frames below; an unknown `t` gives `UnknownFrame`, anything malformed raises FrameError.
`commit_ops` opens a `#commit` frame's CAR slice, checks every block's CID, the commit (DID, rev,
and signature when a key is given) and returns the ops with their records decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import libipld

from atp import cbor
from atp.car import read_car_bytes_raw
from atp.cbor import CID, cid_str
from atp.commit import Commit, check_commit, parse_commit
from atp.crypto import PublicKey
from atp.errors import CommitError, FrameError, InvalidRecordKey, MissingBlockError
from atp.mstinvert import previous_root
from atp.syntax import is_record_key

__all__ = [
    "AccountFrame",
    "CommitFrame",
    "CommitOp",
    "ErrorFrame",
    "Frame",
    "IdentityFrame",
    "InfoFrame",
    "LabelsFrame",
    "RepoOp",
    "SyncFrame",
    "UnknownFrame",
    "commit_ops",
    "decode_frame",
    "encode_frame",
]


@dataclass(frozen=True, slots=True)
class RepoOp:
    """One op of a #commit: action (create/update/delete), path, new CID and previous CID."""

    action: str
    path: str
    cid: str | None
    prev: str | None = None


@dataclass(frozen=True, slots=True)
class CommitOp:
    """A verified op with its decoded record (None for deletes)."""

    action: str
    collection: str
    rkey: str
    cid: str | None
    prev: str | None
    record: Any


@dataclass(frozen=True, slots=True)
class CommitFrame:
    """com.atproto.sync.subscribeRepos#commit."""

    seq: int
    repo: str
    rev: str
    since: str | None
    commit: str
    blocks: bytes
    ops: list[RepoOp]
    time: str
    too_big: bool = False
    prev_data: str | None = None
    blobs: list[str] = field(default_factory=list)
    rebase: bool = False


@dataclass(frozen=True, slots=True)
class SyncFrame:
    """com.atproto.sync.subscribeRepos#sync: the repo's current commit, as a CAR slice."""

    seq: int
    did: str
    rev: str
    blocks: bytes
    time: str


@dataclass(frozen=True, slots=True)
class IdentityFrame:
    """com.atproto.sync.subscribeRepos#identity."""

    seq: int
    did: str
    time: str
    handle: str | None = None


@dataclass(frozen=True, slots=True)
class AccountFrame:
    """com.atproto.sync.subscribeRepos#account."""

    seq: int
    did: str
    time: str
    active: bool
    status: str | None = None


@dataclass(frozen=True, slots=True)
class LabelsFrame:
    """com.atproto.label.subscribeLabels#labels; labels are decoded objects (sig as bytes)."""

    seq: int
    labels: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class InfoFrame:
    """#info (both streams), e.g. name="OutdatedCursor"."""

    name: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """An op=-1 error frame, e.g. error="FutureCursor"."""

    error: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame with a `t` this code does not know; kept so callers can skip it knowingly."""

    t: str
    body: dict[str, Any]


Frame = (
    CommitFrame
    | SyncFrame
    | IdentityFrame
    | AccountFrame
    | LabelsFrame
    | InfoFrame
    | ErrorFrame
    | UnknownFrame
)


class _Body:
    """Typed access to a frame body: each getter raises FrameError on a missing or bad field."""

    def __init__(self, t: str, body: dict[str, Any]) -> None:
        self.t, self.body = t, body

    def get(self, name: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
        """Return body[name] checked against `kind` (None allowed when optional)."""
        value = self.body.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise FrameError(f"{self.t} frame field {name!r} is missing or not {kind}: {value!r:.80}")
        return value

    def cid(self, name: str, *, optional: bool = False) -> str | None:
        """Return a link field as a CID string."""
        value = self.get(name, bytes, optional=optional)
        return cid_str(value) if value is not None else None


def _repo_op(raw: Any) -> RepoOp:
    """Parse one entry of a #commit's ops."""
    if not isinstance(raw, dict):
        raise FrameError(f"#commit op is not a map: {raw!r:.80}")
    op = _Body("#commit op", raw)
    action = op.get("action", str)
    if action not in ("create", "update", "delete"):
        raise FrameError(f"unknown op action {action!r}")
    return RepoOp(action, op.get("path", str), op.cid("cid", optional=True), op.cid("prev", optional=True))


def _commit(b: _Body) -> CommitFrame:
    """Build a CommitFrame."""
    ops = b.get("ops", list)
    return CommitFrame(
        seq=b.get("seq", int), repo=b.get("repo", str), rev=b.get("rev", str),
        since=b.get("since", str, optional=True), commit=str(b.cid("commit")),
        blocks=b.get("blocks", bytes), ops=[_repo_op(o) for o in ops], time=b.get("time", str),
        too_big=bool(b.body.get("tooBig", False)), prev_data=b.cid("prevData", optional=True),
        blobs=[cid_str(x) for x in b.body.get("blobs") or [] if isinstance(x, bytes)],
        rebase=bool(b.body.get("rebase", False)),
    )  # fmt: skip


def _sync(b: _Body) -> SyncFrame:
    """Build a SyncFrame."""
    return SyncFrame(
        b.get("seq", int), b.get("did", str), b.get("rev", str), b.get("blocks", bytes), b.get("time", str)
    )


def _identity(b: _Body) -> IdentityFrame:
    """Build an IdentityFrame."""
    handle = b.get("handle", str, optional=True)
    return IdentityFrame(b.get("seq", int), b.get("did", str), b.get("time", str), handle)


def _account(b: _Body) -> AccountFrame:
    """Build an AccountFrame."""
    status = b.get("status", str, optional=True)
    return AccountFrame(
        b.get("seq", int), b.get("did", str), b.get("time", str), b.get("active", bool), status
    )


def _labels(b: _Body) -> LabelsFrame:
    """Build a LabelsFrame."""
    return LabelsFrame(b.get("seq", int), [_label(x) for x in b.get("labels", list)])


def _info(b: _Body) -> InfoFrame:
    """Build an InfoFrame."""
    return InfoFrame(b.get("name", str), b.get("message", str, optional=True))


_BUILDERS: dict[str, Any] = {
    "#commit": _commit,
    "#sync": _sync,
    "#identity": _identity,
    "#account": _account,
    "#labels": _labels,
    "#info": _info,
}


_LABEL_FIELDS = ("src", "uri", "val", "cts")


def _label(raw: Any) -> dict[str, Any]:
    """Check a label is a map with the required fields."""
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), str) for k in ("src", "uri", "val", "cts")
    ):
        raise FrameError(f"malformed label {raw!r:.120}")
    return raw


def decode_frame(data: bytes) -> Frame:
    """Decode one event-stream frame; raise FrameError if it is malformed."""
    try:
        parts = libipld.decode_dag_cbor_multi(data)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"frame is not DAG-CBOR: {exc}") from None
    if len(parts) != 2 or not isinstance(parts[0], dict) or not isinstance(parts[1], dict):
        raise FrameError(f"frame must be a header map and a body map, got {len(parts)} objects")
    header, body = parts
    op = header.get("op")
    if op == -1:
        b = _Body("error", body)
        return ErrorFrame(b.get("error", str), b.get("message", str, optional=True))
    t = header.get("t")
    if op != 1 or not isinstance(t, str):
        raise FrameError(f"bad frame header {header!r:.80}")
    builder = _BUILDERS.get(t)
    return builder(_Body(t, body)) if builder else UnknownFrame(t, body)


def _body_of(frame: Frame) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (header, body) objects for encoding."""
    if isinstance(frame, ErrorFrame):
        return {"op": -1}, _compact({"error": frame.error, "message": frame.message})
    if isinstance(frame, CommitFrame):
        body = {"seq": frame.seq, "repo": frame.repo, "rev": frame.rev, "since": frame.since,
                "commit": CID.from_str(frame.commit), "blocks": frame.blocks, "time": frame.time,
                "ops": [_op_body(o) for o in frame.ops], "tooBig": frame.too_big, "rebase": frame.rebase,
                "blobs": [CID.from_str(c) for c in frame.blobs]}  # fmt: skip
        if frame.prev_data:
            body["prevData"] = CID.from_str(frame.prev_data)
        return {"op": 1, "t": "#commit"}, body
    if isinstance(frame, UnknownFrame):
        return {"op": 1, "t": frame.t}, frame.body
    names = {SyncFrame: "#sync", IdentityFrame: "#identity", AccountFrame: "#account",
             LabelsFrame: "#labels", InfoFrame: "#info"}  # fmt: skip
    fields = {name: getattr(frame, name) for name in frame.__slots__}
    return {"op": 1, "t": names[type(frame)]}, _compact(fields)


def _op_body(op: RepoOp) -> dict[str, Any]:
    """Encode-ready map of a RepoOp."""
    body: dict[str, Any] = {
        "action": op.action,
        "path": op.path,
        "cid": CID.from_str(op.cid) if op.cid else None,
    }
    if op.prev:
        body["prev"] = CID.from_str(op.prev)
    return body


def _compact(fields: dict[str, Any]) -> dict[str, Any]:
    """Drop optional fields that are None."""
    return {k: v for k, v in fields.items() if v is not None}


def encode_frame(frame: Frame) -> bytes:
    """Encode a frame as header + body DAG-CBOR (devnet's firehose and labeler)."""
    header, body = _body_of(frame)
    return cbor.encode(header) + cbor.encode(body)


def commit_ops(frame: CommitFrame, *, signing_key: PublicKey | None = None) -> list[CommitOp]:
    """Verify a #commit's CAR slice (CIDs, commit DID/rev, signature if a key is given); return its ops."""
    _, blocks = read_car_bytes_raw(frame.blocks)
    commit_cid = CID.from_str(frame.commit)
    commit_block = blocks.get(commit_cid)
    if commit_block is None:
        raise MissingBlockError(f"commit block {frame.commit} is not in the frame", frame.commit)
    commit = parse_commit(commit_cid, commit_block)
    check_commit(commit, did=frame.repo, signing_key=signing_key)
    if commit.rev is not None and commit.rev != frame.rev:
        raise CommitError(f"frame rev {frame.rev} differs from commit rev {commit.rev}")
    ops = [_resolve(op, blocks, frame.too_big) for op in frame.ops]  # checks the record keys first
    if frame.prev_data is not None and not frame.too_big:
        _check_prev_data(frame, blocks, commit)
    return ops


def _check_prev_data(frame: CommitFrame, blocks: dict[bytes, bytes], commit: Commit) -> None:
    """Sync 1.1: the ops, undone on the frame's partial tree, must give back `prevData`."""
    ops: list[tuple[str, bytes | None, bytes | None]] = []
    for op in frame.ops:
        if op.action != "create" and op.prev is None:
            return  # a legacy op without its previous CID: nothing to invert it with
        after = CID.from_str(op.cid) if op.cid and op.action != "delete" else None
        ops.append((op.path, after, CID.from_str(op.prev) if op.prev else None))
    assert frame.prev_data is not None
    previous = previous_root(blocks.get, CID.from_str(commit.data), ops)
    if previous != CID.from_str(frame.prev_data):
        raise CommitError(f"prevData mismatch: the commit's ops undone give {cid_str(previous)}, "
                          f"the frame says {frame.prev_data}")  # fmt: skip


def _resolve(op: RepoOp, blocks: dict[bytes, bytes], too_big: bool) -> CommitOp:
    """Attach the decoded record to a create/update op."""
    collection, _, rkey = op.path.partition("/")
    if not rkey:
        raise FrameError(f"op path {op.path!r} is not collection/rkey")
    if not is_record_key(rkey):  # the whole commit is malformed: never index such a key
        raise InvalidRecordKey(f"op path {op.path[:600]!r}: invalid record key")
    record = None
    if op.action != "delete":
        if op.cid is None:
            raise FrameError(f"{op.action} op for {op.path} has no cid")
        data = blocks.get(CID.from_str(op.cid))
        if data is None and not too_big:
            raise MissingBlockError(f"record block {op.cid} for {op.path} is not in the frame", op.cid)
        record = cbor.decode(data) if data is not None else None
    return CommitOp(op.action, collection, rkey, op.cid, op.prev, record)
