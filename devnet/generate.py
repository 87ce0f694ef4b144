"""Deterministic generation of the initial network: identities, repo sizes, records, commits."""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

from atp.cbor import cid_bytes_for, cid_str, encode
from atp.crypto import Curve, SigningKey
from devnet import records as rec
from devnet.config import DevnetConfig
from devnet.eventlog import EventLog
from devnet.repos import apply_commit, build_commit
from devnet.state import Account, RecordRef, SimClock, World

__all__ = ["account_did", "generate_world", "put_record"]

# Initial records are dated over the year before the devnet starts, 10 s apart, so rkeys and revs
# sort before anything live activity creates.
_HISTORY_US = 365 * 24 * 3600 * 1_000_000
_HISTORY_STEP_US = 10_000_000
# Every tenth account signs with P-256, like the minority of real accounts that do.
_P256_EVERY = 10
_HANDLE_WORDS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")


def account_did(seed: int, index: int) -> str:
    """The did:plc of account `index` (24 base32 characters derived from seed and index)."""
    digest = hashlib.sha256(f"devnet:{seed}:{index}".encode()).digest()
    return "did:plc:" + base64.b32encode(digest).decode().lower()[:24]


def _signing_key(seed: int, index: int) -> SigningKey:
    curve: Curve = "p256" if index % _P256_EVERY == _P256_EVERY - 1 else "secp256k1"
    return SigningKey.generate(curve, seed=f"devnet-key:{seed}:{index}".encode())


def _repo_sizes(config: DevnetConfig, rng: random.Random) -> list[int]:
    """Heavy-tailed sizes: most repos a few to a few hundred records, one huge repo on big networks."""
    sizes = [
        min(config.max_small_repo_records, int(2 + 6 * (rng.paretovariate(1.1) - 1)))
        for _ in range(config.repos)
    ]
    huge = config.resolved_huge_records()
    if huge and config.repos > 1:
        sizes[1] = huge  # index 1: on the first relay page, but not the very first repo
    return sizes


def put_record(world: World, account: Account, path: str, record: dict[str, Any], rev: str) -> bytes:
    """Store a record block and point the account's path at it; return the binary CID."""
    block = encode(record)
    cid = cid_bytes_for(block)
    world.blocks[cid] = block
    account.records[path] = RecordRef(cid, rev)
    if record["$type"] == rec.POST:
        world.post_refs.append((account.uri(path), cid_str(cid)))
    elif record["$type"] == rec.LIST and account.uri(path) not in account.list_uris:
        account.list_uris.append(account.uri(path))
    return cid


def new_record(
    world: World, account: Account, rng: random.Random, created_us: int
) -> tuple[str, dict[str, Any]]:
    """A fresh (path, record) for `account`, dated `created_us` (its rkey is a TID of that time)."""
    own_lists = account.list_uris
    collection = rec.pick_collection(rng, has_lists=bool(own_lists))
    ctx = rec.RecordContext(
        rng=rng,
        created_at=world.clock.iso(created_us),
        dids=world.all_dids,
        posts=world.post_refs,
        own_lists=own_lists,
    )
    record = rec.make_record(collection, ctx)
    return f"{record['$type']}/{world.clock.tid_at(created_us)}", record


def _populate(world: World, account: Account, size: int, rng: random.Random) -> None:
    """Fill a repo with `size` records; their rev is set once the initial commit's rev is known."""
    if size <= 0:
        return
    profile = rec.make_record(rec.PROFILE, _context(world, rng))
    put_record(world, account, f"{rec.PROFILE}/self", profile, "")
    for _ in range(size - 1):
        path, record = new_record(world, account, rng, world.clock.tick())
        put_record(world, account, path, record, "")


def _context(world: World, rng: random.Random) -> rec.RecordContext:
    return rec.RecordContext(rng, world.clock.iso(), world.all_dids, world.post_refs, [])


def _make_accounts(config: DevnetConfig, rng: random.Random) -> list[Account]:
    accounts = []
    for index in range(config.repos):
        pds = rng.randrange(config.pds_hosts)
        handle = f"{_HANDLE_WORDS[index % len(_HANDLE_WORDS)]}{index}.pds{pds}.devnet.test"
        accounts.append(
            Account(index, account_did(config.seed, index), handle, pds, _signing_key(config.seed, index))
        )
    return accounts


def _assign_statuses(config: DevnetConfig, world: World, rng: random.Random) -> None:
    faults = config.faults
    huge = 1 if config.resolved_huge_records() else -1
    candidates = [a for a in world.accounts if a.index != huge]
    wanted = faults.takendown + faults.deactivated + faults.missing
    chosen = rng.sample(candidates, min(wanted, len(candidates)))
    for i, account in enumerate(chosen):
        if i < faults.takendown:
            account.status = "takendown"
        elif i < faults.takendown + faults.deactivated:
            account.status = "deactivated"
        else:
            account.missing = True


def _omit_from_relay(config: DevnetConfig, world: World) -> None:
    """Mark round(fraction * repos) accounts, chosen by the seed, as left out of the relay's listRepos."""
    count = round(config.relay_omit_fraction * len(world.accounts))
    # Its own generator: turning omissions on or off leaves the rest of the world unchanged. A
    # "missing" repo (the relay lists it, its PDS does not know it) is never omitted as well.
    rng = random.Random(f"relay-omit:{config.seed}")
    candidates = [a for a in world.accounts if not a.missing]
    for account in rng.sample(candidates, min(count, len(candidates))):
        account.relay_omitted = True


def generate_world(config: DevnetConfig) -> World:
    """Build the initial network for `config` (pure function of the config)."""
    rng = random.Random(config.seed)
    clock = SimClock(config.start_us - _HISTORY_US, step_us=_HISTORY_STEP_US)
    world = World(
        clock=clock,
        firehose=EventLog(config.event_log_size),
        labels=EventLog(config.label_log_size),
        labeler_did=account_did(config.seed, -1),
        labeler_key=SigningKey.generate("secp256k1", seed=f"devnet-labeler:{config.seed}".encode()),
    )
    for account in _make_accounts(config, rng):
        world.add(account)
    world.all_dids = [a.did for a in world.accounts]
    for account, size in zip(world.accounts, _repo_sizes(config, rng), strict=True):
        _populate(world, account, size, rng)
        rev = clock.tid()
        for ref in account.records.values():
            ref.rev = rev
        apply_commit(account, build_commit(account, rev))
    _assign_statuses(config, world, rng)
    _omit_from_relay(config, world)
    clock.restart(max(clock.now_us, config.start_us), step_us=1_000)
    return world
