"""Live activity: one `step()` = one event (commit, #sync, #identity, #account or labels).

Steps are synchronous: state, event log and truth change together in one loop iteration. The RNG is
seeded from the config, so the sequence of events is reproducible (only their timing is not).
Repos larger than `live_max_records` never change (each commit rebuilds the repo's MST).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from atp.cbor import cid_str
from atp.frames import RepoOp
from devnet import records as rec
from devnet.config import DevnetConfig
from devnet.events import emit_account, emit_commit, emit_identity, emit_sync
from devnet.generate import new_record, put_record
from devnet.labeler import LabelMaker
from devnet.repos import apply_commit, build_commit
from devnet.state import Account, Departure, World

__all__ = ["Activity", "move_account"]

# Relative weights of event kinds; commits dominate as on the real firehose.
_KINDS = ("commit", "labels", "account", "identity", "sync", "move")
_KIND_WEIGHTS = (88, 6, 3, 2, 1, 1)
# How many recently created records we remember to delete soon after creation (create-then-delete).
_RECENT = 200
_UPDATABLE = (rec.PROFILE, rec.LIST, rec.GENERATOR, rec.POST)


class Activity:
    """Drives the world forward one event at a time."""

    def __init__(self, world: World, config: DevnetConfig) -> None:
        self._world = world
        self._rng = random.Random(f"devnet-activity:{config.seed}")
        self._live = [
            a for a in world.accounts if len(a.records) <= config.live_max_records and not a.missing
        ]
        self._recent: deque[tuple[Account, str]] = deque(maxlen=_RECENT)
        self._labels = LabelMaker(world, self._rng)
        self._handlers: dict[str, Callable[[], bool]] = {
            "commit": self._commit_event,
            "labels": self._labels.step,
            "account": self._account_event,
            "identity": self._identity_event,
            "sync": self._sync_event,
            "move": self._move_event,
        }
        self._pds_hosts = config.pds_hosts

    def step(self) -> str:
        """Produce one event; return its kind."""
        while True:
            kind = self._rng.choices(_KINDS, weights=_KIND_WEIGHTS)[0]
            if self._handlers[kind]():
                return kind

    def labels(self, n: int) -> None:
        """Emit `n` label events (the labeler's backlog at start-up)."""
        for _ in range(n):
            self._labels.step()

    def _active_live(self) -> list[Account]:
        return [a for a in self._live if a.status == "active"]

    def _commit_event(self) -> bool:
        recent = self._pop_recent() if self._rng.random() < 0.15 else None
        if recent is not None:
            account, path = recent
            return self._commit(account, [("delete", path)])
        candidates = self._active_live()
        if not candidates:
            return False
        account = self._rng.choice(candidates)
        count = 1 if self._rng.random() < 0.85 else self._rng.randint(2, 4)
        return self._commit(account, [self._pick_change(account) for _ in range(count)])

    def _pop_recent(self) -> tuple[Account, str] | None:
        while self._recent:
            account, path = self._recent.pop()
            if account.status == "active" and path in account.records:
                return account, path
        return None

    def _pick_change(self, account: Account) -> tuple[str, str | None]:
        roll = self._rng.random()
        if roll < 0.65 or len(account.records) < 2:
            return "create", None
        if roll < 0.9:
            # Any record, so old records get deleted too, not only fresh ones.
            return "delete", self._rng.choice(list(account.records))
        updatable = [p for p in account.records if p.split("/")[0] in _UPDATABLE]
        return ("update", self._rng.choice(updatable)) if updatable else ("create", None)

    def _apply_change(
        self, account: Account, action: str, path: str | None, touched: set[str]
    ) -> RepoOp | None:
        world = self._world
        if action == "create":
            path, record = new_record(world, account, self._rng, world.clock.tick())
            cid = put_record(world, account, path, record, "")
            self._recent.append((account, path))
            return RepoOp("create", path, cid_str(cid))
        if path is None or path in touched or path not in account.records:
            return None
        prev = cid_str(account.records[path].cid)
        if action == "delete":
            del account.records[path]
            if account.uri(path) in account.list_uris:
                account.list_uris.remove(account.uri(path))
            return RepoOp("delete", path, None, prev)
        collection = path.split("/")[0]
        record = rec.make_record(
            collection,
            rec.RecordContext(
                self._rng, world.clock.iso(), world.all_dids, world.post_refs, account.list_uris
            ),
        )
        if record["$type"] != collection:
            return None
        cid = put_record(world, account, path, record, "")
        return None if cid_str(cid) == prev else RepoOp("update", path, cid_str(cid), prev)

    def _apply_changes(self, account: Account, changes: list[tuple[str, str | None]]) -> list[RepoOp]:
        ops: list[RepoOp] = []
        touched: set[str] = set()
        for action, path in changes:
            op = self._apply_change(account, action, path, touched)
            if op is not None:
                ops.append(op)
                touched.add(op.path)
        return ops

    def _commit(
        self, account: Account, changes: list[tuple[str, str | None]], *, silent: bool = False
    ) -> bool:
        """Apply changes as one signed commit; emit #commit (or nothing when `silent`, for #sync)."""
        ops = self._apply_changes(account, changes)
        if not ops:
            return False
        since, prev_data = account.rev, account.data_cid
        commit = build_commit(account, self._world.clock.tid())
        for op in ops:
            if op.cid is not None:
                account.records[op.path].rev = commit.rev
        apply_commit(account, commit)
        if not silent:
            emit_commit(self._world, account, commit, ops, since, prev_data)
        return True

    def _account_event(self) -> bool:
        candidates = [a for a in self._live if a.status != "deleted"]
        if not candidates:
            return False
        account = self._rng.choice(candidates)
        if account.status != "active":
            account.status = "active"
        else:
            roll = self._rng.random()
            account.status = "takendown" if roll < 0.45 else "deactivated" if roll < 0.95 else "deleted"
        account.car = None
        emit_account(self._world, account)
        return True

    def _identity_event(self) -> bool:
        account = self._rng.choice(self._live) if self._live else None
        if account is None or account.status != "active":
            return False
        name, _, domain = account.handle.partition(".")
        account.handle = f"{name.split('-')[0]}-{self._world.clock.tick() % 100_000}.{domain}"
        emit_identity(self._world, account)
        return True

    def _move_event(self) -> bool:
        candidates = self._active_live()
        if self._pds_hosts < 2 or not candidates:
            return False
        account = self._rng.choice(candidates)
        move_account(
            self._world, account, self._rng.choice([i for i in range(self._pds_hosts) if i != account.pds])
        )
        return True

    def _sync_event(self) -> bool:
        """A commit that never appeared on the firehose, announced by #sync: consumers must re-fetch."""
        candidates = self._active_live()
        if not candidates:
            return False
        account = self._rng.choice(candidates)
        if not self._commit(account, [("create", None)], silent=True):
            return False
        emit_sync(self._world, account)
        return True


def move_account(world: World, account: Account, to: int) -> None:
    """The account migrates to PDS `to`, as on the real network: its DID document names the new
    host (#identity), the new host announces it active, and the old host, where it is now
    deactivated, announces that too: a stale #account that a consumer must not believe. The old
    host keeps the account, deactivated, at the rev it left with (its listRepos still lists it)."""
    old = account.pds
    account.pds = to
    account.moved_from.pop(to, None)
    account.moved_from[old] = Departure(account.rev, account.head)
    account.car = None
    world.count("accounts.moved")
    emit_identity(world, account)
    emit_account(world, account)
    emit_account(world, account, stale_status="deactivated")
