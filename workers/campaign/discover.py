"""Which repos a campaign covers: listRepos paging, DID files, and the index's health check.

`--scope all` pages the relays' listRepos here, through atp.xrpc.XrpcClient (the ingester's own
discovery, workers/ingester/listing.py, writes straight into `repo_backfill`: a plan must not).
`--scope stale` compares what the relays list with what PostgreSQL holds: a repo is stale when
no row of it is indexed, or when its newest indexed rev (the snapshot's, or any row's) is older
than the rev its relay reports.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from atp import AtpError, InvalidDid
from atp.did import DidResolver, validate_did
from atp.http import HttpClient
from atp.netpolicy import NetPolicy
from atp.repo import read_repo
from atp.xrpc import XrpcClient
from streams import host_key
from workers._errors import ServerError, SettingError
from workers.campaign.config import CampaignConfig
from workers.indexer.collections import ALL_TABLES
from workers.ingester.discovery import PAGED_STATUSES, parse_host

# Page size of listRepos (the lexicon's maximum).
LIST_LIMIT = 1000
# A sampled repo larger than this is counted as this large (estimates only).
SAMPLE_MAX_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class Repo:
    """One repo of a plan: where it was listed and the rev listed with it (None: unknown)."""

    did: str
    host: str
    rev: str | None = None


@contextlib.asynccontextmanager
async def network(config: CampaignConfig, hosts: tuple[str, ...] = ()) -> AsyncIterator[Net]:
    """XRPC and DID resolution with the SSRF policy; configured hosts are trusted."""
    policy = NetPolicy(allow_private=config.allow_private_hosts).trusting(
        [*config.relay_hosts, *hosts, config.plc_url]
    )
    async with HttpClient(policy, read_timeout_s=30.0) as http:
        yield Net(XrpcClient(http, timeout_s=30.0), DidResolver(http, plc_url=config.plc_url))


@dataclass(frozen=True)
class Net:
    xrpc: XrpcClient
    resolver: DidResolver

    async def list_host(self, host: str) -> tuple[list[Repo], set[str]]:
        """(active repos, DIDs of the inactive ones skipped) of one host's listRepos, every page."""
        repos: list[Repo] = []
        inactive: set[str] = set()
        cursor: str | None = None
        while True:
            try:
                page = await self.xrpc.list_repos(host, cursor, LIST_LIMIT)
            except AtpError as exc:
                raise ServerError(f"listRepos of {host} failed: {exc}") from exc
            for item in page.repos:
                if not isinstance(item, dict):
                    continue
                try:
                    did = validate_did(str(item.get("did", "")))
                except InvalidDid:
                    continue
                if item.get("active", True) is False:
                    inactive.add(did)
                    continue
                rev = item.get("rev")
                repos.append(Repo(did, host_key(host), str(rev) if rev else None))
            cursor = page.cursor
            if cursor is None:
                return repos, inactive

    async def list_hosts(self, hosts: tuple[str, ...]) -> tuple[list[Repo], int]:
        """Every active repo of `hosts`, each DID once (the first host that lists it), and how
        many accounts were skipped as inactive: each once, and none that another host lists as
        active (an account that moved is inactive where it left, active where it went)."""
        seen: dict[str, Repo] = {}
        inactive: set[str] = set()
        for host in hosts:
            repos, skipped = await self.list_host(host)
            inactive |= skipped
            for repo in repos:
                seen.setdefault(repo.did, repo)
        return list(seen.values()), len(inactive - seen.keys())

    async def discover(self, relays: tuple[str, ...], mode: str) -> tuple[list[Repo], int]:
        """Every active repo the relays know of, as the ingester's discovery `mode` finds them.

        A relay's listRepos leaves out accounts it has not crawled; with `hosts` or `both` the
        PDS hosts of each relay's listHosts page their own accounts too.
        """
        hosts: list[str] = list(relays) if mode in ("relay", "both") else []
        if mode in ("hosts", "both"):
            for relay in relays:
                hosts += [h for h in await self.relay_hosts(relay) if h not in hosts]
        return await self.list_hosts(tuple(hosts))

    async def relay_hosts(self, relay: str) -> list[str]:
        """The PDS hosts a relay's listHosts names with a status whose accounts are served."""
        scheme = urlsplit(relay).scheme or "https"
        found: list[str] = []
        cursor: str | None = None
        while True:
            try:
                page = await self.xrpc.list_hosts(relay, cursor)
            except AtpError as exc:
                raise ServerError(f"listHosts of {relay} failed: {exc}") from exc
            for item in page.hosts:
                with contextlib.suppress(ValueError):
                    host = parse_host(item)
                    if host.status in PAGED_STATUSES:
                        found.append(f"{scheme}://{host.hostname}")
            cursor = page.cursor
            if cursor is None:
                return found

    async def pds_of(self, did: str) -> str:
        """The host of the repo's PDS, from its DID document."""
        return host_key((await self.resolver.resolve(did)).pds_endpoint)

    async def fetch_records(self, did: str) -> tuple[int, dict[tuple[str, str], str], str]:
        """(CAR bytes, (collection, rkey) -> cid, rev) of a repo fetched from its PDS."""
        identity = await self.resolver.resolve(did)
        size = 0
        records: dict[tuple[str, str], str] = {}

        async def counted(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                yield chunk

        async with self.xrpc.get_repo(
            identity.pds_endpoint, did, max_bytes=SAMPLE_MAX_BYTES, timeout_s=60.0
        ) as chunks:
            reader = await read_repo(counted(chunks), did=did, signing_key=identity.signing_key)
        try:
            async for part in reader.slices():
                for collection, rkey, cid, _ in zip(*part, strict=True):
                    records[(collection, rkey)] = cid
            return size, records, reader.commit.rev or ""
        finally:
            reader.close()


def read_did_file(path: Path, host: str) -> list[Repo]:
    """One DID a line (blank lines and `#` comments skipped); a bad line is a SettingError."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SettingError(f"--scope dids={path}: cannot read it ({exc.strerror or exc})") from None
    repos: dict[str, Repo] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            did = validate_did(text)
        except InvalidDid as exc:
            raise SettingError(f"--scope dids={path}: line {number}: {exc}") from None
        repos.setdefault(did, Repo(did, host))
    if not repos:
        raise SettingError(f"--scope dids={path}: no DIDs in it")
    return list(repos.values())


async def indexed_revs(conn: Any, dids: list[str]) -> dict[str, str]:
    """DID -> newest rev PostgreSQL holds for it (snapshot floor or any row); absent: nothing."""
    newest: dict[str, str] = {}
    sources = ["SELECT did, repo_rev AS rev FROM actor_sync WHERE repo_rev IS NOT NULL AND did = ANY($1)"]
    sources += [f"SELECT did, max(rev) FROM {t.table} WHERE did = ANY($1) GROUP BY did" for t in ALL_TABLES]
    for i in range(0, len(dids), 5000):
        chunk = dids[i : i + 5000]
        for sql in sources:
            for did, rev in await conn.fetch(sql, chunk):
                if rev is not None and rev > newest.get(did, ""):
                    newest[did] = rev
    return newest


async def stale(conn: Any, listed: list[Repo]) -> list[Repo]:
    """The listed repos missing from the index or indexed at an older rev than listed."""
    have = await indexed_revs(conn, [r.did for r in listed])
    return [r for r in listed if r.did not in have or (r.rev is not None and have[r.did] < r.rev)]
