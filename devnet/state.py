"""The devnet's mutable world: accounts, their records and repo heads, labels, the simulated clock.

All state lives on one asyncio loop and is only mutated synchronously (between awaits), so every
HTTP answer, firehose frame and truth snapshot sees one consistent state.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from atp.cbor import cid_str
from atp.crypto import SigningKey
from atp.tid import tid_from_time
from devnet.eventlog import EventLog

__all__ = ["Account", "Departure", "Label", "SimClock", "World"]

ACTIVE = "active"
STATUSES = ("active", "takendown", "deactivated", "deleted")


class SimClock:
    """Deterministic time: advances a fixed step per reading, never reads the wall clock."""

    def __init__(self, start_us: int, step_us: int = 1_000) -> None:
        self.now_us = start_us
        self._step_us = step_us

    def tick(self) -> int:
        """Advance and return the new time in microseconds."""
        self.now_us += self._step_us
        return self.now_us

    def tid(self, clock_id: int = 0) -> str:
        """A fresh TID (strictly increasing) from the simulated time."""
        return tid_from_time(self.tick(), clock_id)

    def tid_at(self, us: int, clock_id: int = 0) -> str:
        """The TID of a time already read from this clock."""
        return tid_from_time(us, clock_id)

    def restart(self, now_us: int, step_us: int) -> None:
        """Continue from `now_us` (never backwards) with a new step."""
        self.now_us = max(self.now_us, now_us)
        self._step_us = step_us

    def iso(self, us: int | None = None) -> str:
        """ISO-8601 UTC with milliseconds, as AT Protocol records use."""
        moment = dt.datetime.fromtimestamp((self.now_us if us is None else us) / 1e6, tz=dt.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class RecordRef:
    """Where a record stands: its binary CID and the rev of the commit that last wrote it."""

    cid: bytes
    rev: str


@dataclass(frozen=True, slots=True)
class Departure:
    """What a PDS an account migrated away from keeps: the repo as it was when it left."""

    rev: str
    head: str


@dataclass(slots=True)
class Account:
    """One repo and its hosting account."""

    index: int
    did: str
    handle: str
    pds: int
    key: SigningKey
    status: str = ACTIVE
    missing: bool = False  # fault: the relay lists it, the PDS has never heard of it
    # PDS hosts it left, with the repo each kept: they list and answer it as "deactivated".
    moved_from: dict[int, Departure] = field(default_factory=dict)
    relay_omitted: bool = False  # left out of the relay's listRepos (its PDS still lists it)
    records: dict[str, RecordRef] = field(default_factory=dict)
    rev: str = ""
    commit_cid: bytes = b""
    commit_block: bytes = b""
    data_cid: bytes = b""
    list_uris: list[str] = field(default_factory=list)  # this account's app.bsky.graph.list records
    tree: dict[bytes, bytes] = field(default_factory=dict)  # MST node blocks of the current tree
    car: bytes | None = None  # getRepo body for the current state, built on first request

    @property
    def active(self) -> bool:
        """Whether the PDS serves this repo."""
        return self.status == ACTIVE and not self.missing

    @property
    def truth_status(self) -> str:
        """Status as the ground truth reports it (a missing repo is, in effect, deleted)."""
        return "deleted" if self.missing else self.status

    @property
    def head(self) -> str:
        """The current commit CID as a string."""
        return cid_str(self.commit_cid)

    def uri(self, path: str) -> str:
        """at:// URI of a record path ("collection/rkey")."""
        return f"at://{self.did}/{path}"


@dataclass(slots=True)
class Label:
    """A label as the labeler emitted it (before signing)."""

    src: str
    uri: str
    val: str
    cts: str
    cid: str | None = None
    neg: bool = False
    exp: str | None = None

    def as_object(self) -> dict[str, Any]:
        """The com.atproto.label.defs#label object without `sig`."""
        obj: dict[str, Any] = {"ver": 1, "src": self.src, "uri": self.uri, "val": self.val, "cts": self.cts}
        if self.cid is not None:
            obj["cid"] = self.cid
        if self.neg:
            obj["neg"] = True
        if self.exp is not None:
            obj["exp"] = self.exp
        return obj


@dataclass
class World:
    """Accounts, record blocks, labels and the two event logs."""

    clock: SimClock
    firehose: EventLog
    labels: EventLog
    labeler_did: str
    labeler_key: SigningKey
    accounts: list[Account] = field(default_factory=list)
    all_dids: list[str] = field(default_factory=list)
    by_did: dict[str, Account] = field(default_factory=dict)
    blocks: dict[bytes, bytes] = field(default_factory=dict)  # record blocks by binary CID
    post_refs: list[tuple[str, str]] = field(default_factory=list)  # (uri, cid) of posts ever made
    live_labels: dict[tuple[str, str], Label] = field(default_factory=dict)  # (uri, val) -> label
    counters: dict[str, int] = field(default_factory=dict)

    def add(self, account: Account) -> None:
        """Register a freshly generated account."""
        self.accounts.append(account)
        self.by_did[account.did] = account

    def count(self, name: str, n: int = 1) -> None:
        """Bump a statistics counter."""
        self.counters[name] = self.counters.get(name, 0) + n

    def record_total(self) -> int:
        """Records held by all repos (whatever their status)."""
        return sum(len(a.records) for a in self.accounts)

    def live_record_total(self) -> int:
        """Records of active repos: what an exact index must hold (the truth's record lines)."""
        return sum(len(a.records) for a in self.accounts if a.active)
