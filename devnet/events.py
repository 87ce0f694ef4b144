"""Appending subscribeRepos and subscribeLabels frames to the world's event logs."""

from __future__ import annotations

from collections.abc import Iterable

from atp.car import write_car
from atp.cbor import CID, cid_str, encode
from atp.frames import AccountFrame, CommitFrame, IdentityFrame, LabelsFrame, RepoOp, SyncFrame, encode_frame
from devnet.repos import Commit, deterministic_sign, inversion_nodes, proof_nodes
from devnet.state import Account, Label, World

__all__ = ["emit_account", "emit_commit", "emit_identity", "emit_labels", "emit_sync"]


def _cid(text: str | None) -> bytes | None:
    return CID.from_str(text) if text else None


def _commit_slice(world: World, commit: Commit, ops: list[RepoOp]) -> bytes:
    """CAR slice of a #commit: the commit, the records written and the MST nodes that prove the ops."""
    blocks: list[tuple[bytes, bytes]] = [(commit.cid, commit.block)]
    undo = [(op.path, _cid(op.cid) if op.action != "delete" else None, _cid(op.prev)) for op in ops]
    nodes = proof_nodes(commit, (op.path for op in ops)) | inversion_nodes(commit, undo)
    blocks.extend((cid, commit.tree[cid]) for cid in sorted(nodes))
    # Two ops may write identical records (same CID): each block goes in once.
    written = dict.fromkeys(CID.from_str(op.cid) for op in ops if op.cid is not None)
    blocks.extend((cid, world.blocks[cid]) for cid in written)
    return write_car([commit.cid], blocks)


def emit_commit(
    world: World, account: Account, commit: Commit, ops: list[RepoOp], since: str | None, prev_data: bytes
) -> int:
    """Append a #commit for `commit` (already applied to `account`); return its seq."""
    blocks = _commit_slice(world, commit, ops)
    time = world.clock.iso()
    world.count("events.commit")
    return world.firehose.append(
        lambda seq: encode_frame(
            CommitFrame(
                seq=seq,
                repo=account.did,
                rev=commit.rev,
                since=since,
                commit=cid_str(commit.cid),
                blocks=blocks,
                ops=ops,
                time=time,
                prev_data=cid_str(prev_data),
            )
        )
    )


def emit_sync(world: World, account: Account) -> int:
    """Append a #sync carrying the account's current commit block."""
    blocks = write_car([account.commit_cid], [(account.commit_cid, account.commit_block)])
    time = world.clock.iso()
    world.count("events.sync")
    return world.firehose.append(
        lambda seq: encode_frame(
            SyncFrame(seq=seq, did=account.did, rev=account.rev, blocks=blocks, time=time)
        )
    )


def emit_identity(world: World, account: Account) -> int:
    """Append an #identity with the account's current handle."""
    time = world.clock.iso()
    world.count("events.identity")
    return world.firehose.append(
        lambda seq: encode_frame(IdentityFrame(seq=seq, did=account.did, time=time, handle=account.handle))
    )


def emit_account(world: World, account: Account, *, stale_status: str | None = None) -> int:
    """Append an #account with the account's current hosting status, or, with `stale_status`, the
    status a host the account has left still announces (the relay passes it on)."""
    time = world.clock.iso()
    said = stale_status or account.status
    status = None if said == "active" else said
    world.count("events.account_stale" if stale_status else "events.account")
    return world.firehose.append(
        lambda seq: encode_frame(
            AccountFrame(seq=seq, did=account.did, time=time, active=said == "active", status=status)
        )
    )


def sign_label(world: World, label: Label) -> dict[str, object]:
    """The label object with the labeler's signature over its DAG-CBOR encoding."""
    obj = label.as_object()
    return {**obj, "sig": deterministic_sign(world.labeler_key, encode(obj))}


def emit_labels(world: World, labels: Iterable[Label]) -> int:
    """Append one #labels frame and update the set of live labels."""
    signed = []
    for label in labels:
        key = (label.uri, label.val)
        if label.neg:
            world.live_labels.pop(key, None)
        else:
            world.live_labels[key] = label
        signed.append(sign_label(world, label))
    world.count("events.labels")
    return world.labels.append(lambda seq: encode_frame(LabelsFrame(seq=seq, labels=signed)))
