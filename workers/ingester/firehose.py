"""Firehose mode: `subscribeRepos` frames -> create/update/delete/account/identity events.

Every commit is verified (block CIDs, and the signature with the repo's key from its DID
document unless disabled). A frame that fails to decode or verify is dead-lettered with its
bytes and a reason, and the cursor moves past it. A `#sync` frame, a commit marked `tooBig`, or a
commit whose `since` does not chain to the last rev seen for that repo enqueues the repo into
`repo_backfill` for a fresh snapshot, in the same MULTI as the batch.

Account lifecycle (docs/indexer.md, "Account status"):
- `#account active=true` is applied and enqueues one snapshot (reason `reactivated`): a repo that
  was inactive when it was listed, or when its job ran, was never snapshotted, and its records are
  only reachable this way. One job per reactivation; the backfiller's job for a repo that is
  inactive again by then ends as an outcome, and the next reactivation enqueues the next one.
- `#account active=false` is confirmed with `getRepoStatus` at the DID's *current* PDS first: a
  host the account has moved away from keeps sending `#account` events about it. When the current
  PDS says the repo is active the event is stale and dropped (counted as `stale_accounts`); when it
  cannot be asked, the relay's word is applied.
- `#identity` evicts the DID from the identity cache, so a move to another PDS is followed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import msgspec

from atp import AtpError, DidResolutionError, RepoNotFound, SignatureError, cbor
from atp.frames import (
    AccountFrame,
    CommitFrame,
    ErrorFrame,
    IdentityFrame,
    InfoFrame,
    SyncFrame,
    commit_ops,
    decode_frame,
)
from atp.xrpc import RepoStatus, XrpcClient
from schemas import Account, Identity, RecordCreate, RecordDelete, RecordUpdate, RepoJob, contract_for
from streams import Fields, StreamNames, dlq_key
from workers._identity import IdentityCache
from workers.ingester.eventstream import Converted, SourceUnavailable
from workers.ingester.seqguard import control_of, dead_frame_fields

log = logging.getLogger("streamfill.ingester.firehose")
# What a converter writes: firehose events to the live stream, resync jobs to the jobs stream.
_EVENTS = contract_for(StreamNames.FIREHOSE_LIVE)
_JOBS = contract_for(StreamNames.REPO_BACKFILL)

# Whatever a malformed frame can raise while being decoded or verified: it is dead-lettered with
# its bytes and the reason, never allowed to crash the ingester (which would stall on it forever).
_BAD_INPUT = (AtpError, ValueError, TypeError, KeyError, IndexError)

# Revs remembered for chain checks; a repo not remembered is simply not checked on its next commit.
_REV_MEMORY = 500_000


class AccountChecker:
    """Asks a DID's current PDS for its repo status (`getRepoStatus`), following a move once."""

    def __init__(self, identities: IdentityCache, xrpc: XrpcClient) -> None:
        self.identities = identities
        self._xrpc = xrpc

    async def status(self, did: str) -> RepoStatus | None:
        """The current PDS's answer; None when it has none (the caller keeps the relay's word).

        The DID is resolved afresh (the account may have moved since it was cached). A DID the PLC
        directory cannot resolve right now raises SourceUnavailable: the frame is retried later,
        never applied unconfirmed because of an outage of ours.
        """
        try:
            await self.identities.evict(did)
            pds = (await self.identities.resolve(did)).pds_endpoint
            return await self._xrpc.get_repo_status(pds, did)
        except DidResolutionError as exc:
            if not exc.permanent:
                raise SourceUnavailable(f"resolving {did}: {exc}") from exc
            return None
        except RepoNotFound:
            return None
        except AtpError as exc:
            log.warning("getRepoStatus failed", extra={"did": did, "error": f"{type(exc).__name__}: {exc}"})
            return None


class FirehoseConverter:
    """Converts subscribeRepos frames for one relay host."""

    def __init__(
        self,
        host: str,
        live_stream: str,
        backfill_stream: str,
        identities: IdentityCache | None,
        *,
        accounts: AccountChecker | None = None,
    ) -> None:
        self._host = host
        self._backfill = backfill_stream
        self._dlq = dlq_key(live_stream)
        self._identities = identities
        self._accounts = accounts
        self._revs: OrderedDict[str, str] = OrderedDict()
        self.resyncs = 0
        self.dead_lettered = 0
        self.stale_accounts = 0

    async def convert(self, frame: bytes) -> Converted:
        try:
            decoded = decode_frame(frame)
        except _BAD_INPUT as exc:
            return self._dead(frame, "undecodable-frame", exc, None)
        if isinstance(decoded, CommitFrame):
            return await self._commit(frame, decoded)
        if isinstance(decoded, IdentityFrame):
            await self._forget(decoded.did)  # the DID document changed: its PDS or key may have
            event: Any = Identity(seq=decoded.seq, did=decoded.did, handle=decoded.handle, time=decoded.time)
            return Converted([_EVENTS.encode(event)], seq=decoded.seq)
        if isinstance(decoded, AccountFrame):
            return await self._account(decoded)
        if isinstance(decoded, SyncFrame):
            self._revs[decoded.did] = decoded.rev
            return Converted(extra=[self._resync(decoded.did, decoded.rev, "sync")], seq=decoded.seq)
        if isinstance(decoded, InfoFrame | ErrorFrame):
            log.warning("relay says", extra={"host": self._host, "frame": repr(decoded)})
            return Converted(control=control_of(decoded))
        return Converted()

    async def _forget(self, did: str) -> None:
        caches = [self._identities] if self._identities is not None else []
        if self._accounts is not None and self._accounts.identities not in caches:
            caches.append(self._accounts.identities)
        for cache in caches:
            await cache.evict(did)

    async def _account(self, frame: AccountFrame) -> Converted:
        active, status = frame.active, frame.status
        if not active and self._accounts is not None:
            current = await self._accounts.status(frame.did)
            if current is not None and current.active:
                self.stale_accounts += 1
                log.info(
                    "stale #account dropped", extra={"did": frame.did, "status": status, "host": self._host}
                )
                return Converted(seq=frame.seq)
            if current is not None and current.status:
                status = current.status
        event = Account(seq=frame.seq, did=frame.did, active=active, status=status, time=frame.time)
        out = Converted([_EVENTS.encode(event)], seq=frame.seq)
        if active:
            self._revs.pop(frame.did, None)  # the snapshot starts the chain afresh
            out.extra.append(self._resync(frame.did, None, "reactivated"))
        return out

    async def _commit(self, raw: bytes, frame: CommitFrame) -> Converted:
        try:
            ops = await self._verified_ops(frame)
            # A tooBig commit may leave record blocks out: those writes come with the snapshot it
            # triggers, never as events without a record.
            entries = [
                _EVENTS.encode(_op_event(frame, op))
                for op in ops
                if op.action == "delete" or op.record is not None
            ]
        except DidResolutionError as exc:
            if not exc.permanent:  # the PLC directory is unreachable: retry, do not dead-letter
                raise SourceUnavailable(f"resolving {frame.repo}: {exc}") from exc
            return self._dead(raw, "unverifiable-commit", exc, frame.seq)
        except _BAD_INPUT as exc:
            return self._dead(raw, "unverifiable-commit", exc, frame.seq)
        out = Converted(seq=frame.seq)
        previous = self._revs.get(frame.repo)
        if frame.too_big or (previous is not None and frame.since != previous):
            why = "too-big" if frame.too_big else "gap"
            out.extra.append(self._resync(frame.repo, frame.rev, why))
        self._remember(frame.repo, frame.rev)
        out.entries = entries
        return out

    async def _verified_ops(self, frame: CommitFrame) -> list[Any]:
        if self._identities is None:
            return commit_ops(frame)
        key = (await self._identities.resolve(frame.repo)).signing_key
        try:
            return commit_ops(frame, signing_key=key)
        except SignatureError:
            await self._identities.evict(frame.repo)  # the key may have rotated: try a fresh one
            key = (await self._identities.resolve(frame.repo)).signing_key
            return commit_ops(frame, signing_key=key)

    def _remember(self, did: str, rev: str) -> None:
        self._revs[did] = rev
        self._revs.move_to_end(did)
        if len(self._revs) > _REV_MEMORY:
            self._revs.popitem(last=False)

    def _resync(self, did: str, rev: str | None, why: str) -> tuple[str, Fields]:
        self.resyncs += 1
        log.info("repo needs a fresh snapshot", extra={"did": did, "why": why, "host": self._host})
        return self._backfill, _JOBS.encode(RepoJob(did=did, host=self._host, rev=rev, reason=why))

    def _dead(self, frame: bytes, reason: str, exc: Exception, seq: int | None) -> Converted:
        self.dead_lettered += 1
        fields = dead_frame_fields(frame, self._host, reason, f"{type(exc).__name__}: {exc}", seq)
        return Converted(extra=[(self._dlq, fields)], seq=seq)


def _op_event(frame: CommitFrame, op: Any) -> Any:
    common = {
        "seq": frame.seq,
        "did": frame.repo,
        "rev": frame.rev,
        "collection": op.collection,
        "rkey": op.rkey,
        "time": frame.time,
    }
    if op.action == "delete":
        return RecordDelete(**common)
    record = msgspec.Raw(cbor.to_json_bytes(op.record))
    if op.action == "update":
        return RecordUpdate(cid=op.cid, record=record, **common)
    return RecordCreate(cid=op.cid, record=record, **common)
