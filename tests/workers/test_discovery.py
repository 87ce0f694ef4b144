"""Host discovery against devnet: listHosts, each PDS's listRepos, the listed register, re-checks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from devnet import Devnet, DevnetConfig, FaultConfig
from devnet.http import account_id
from schemas import RepoMarker, decode_entry
from streams import CURSOR_DONE, DONE, Component, Entry, Keys, host_key, skipped_ranges
from tests._support import wait_until, xrange
from tests.workers._pipeline import backfiller_config, ingester_config, read_all
from workers.backfiller.worker import build_backfiller
from workers.ingester.cli import relist, retry_skipped
from workers.ingester.config import IngesterConfig
from workers.ingester.discovery import discovery_rounds
from workers.ingester.worker import Ingester, build_ingester

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def listing(redis: aioredis.Redis, config: IngesterConfig) -> AsyncIterator[Ingester]:
    """The ingester's listing components, running until the block ends."""
    async with build_ingester(redis, config) as ingester, anyio.create_task_group() as tg:
        components: list[Component] = [*ingester.listings, *ingester.discoveries]
        for component in components:
            tg.start_soon(component.run)
        try:
            yield ingester
        finally:
            for component in components:
                component.stop()


async def until_round(redis: aioredis.Redis, keys: Keys, net: Devnet, n: int, timeout: float = 30.0) -> None:
    relay = host_key(net.relay_url)

    async def reached() -> bool:
        return await discovery_rounds(redis, keys, relay) >= n

    await wait_until(reached, timeout=timeout, what=f"discovery round {n}")


async def jobs(redis: aioredis.Redis, keys: Keys) -> list[Any]:
    return await read_all(redis, keys.stream("repo_backfill"))


def pds_host(net: Devnet, index: int) -> str:
    return host_key(net.pds_urls[index])


async def test_omitted_accounts_are_found_through_their_pds_and_listed_once(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    faults = FaultConfig(takendown=2, deactivated=2)
    keys = Keys(prefix)
    config = DevnetConfig(repos=80, pds_hosts=3, seed=11, relay_omit_fraction=0.2, faults=faults)
    async with Devnet(config) as net:
        omitted = {a.did: a.pds for a in net.world.accounts if a.relay_omitted}
        assert len(omitted) == 16
        async with listing(redis_client, ingester_config(redis_url, prefix, net.relay_url)):
            relay_key = keys.cursor("repo_backfill", host_key(net.relay_url))
            await wait_until(lambda: _done(redis_client, relay_key), what="relay listing done")
            await until_round(redis_client, keys, net, 1)
        truth = {t["did"]: t["status"] for t in net.truth() if t["type"] == "repo"}
        listed = await jobs(redis_client, keys)
        counts = Counter(j.did for j in listed)
        assert set(counts) == set(truth)
        assert set(counts.values()) == {1}  # found by the relay and by its PDS: enqueued once
        by_did = {j.did: j for j in listed}
        for did, pds in omitted.items():
            assert by_did[did].host == net.pds_urls[pds]  # only its PDS lists it
            assert by_did[did].active == (truth[did] == "active")
        hosts = await redis_client.hgetall(keys.hosts("repo_backfill", host_key(net.relay_url)))
        assert {pds_host(net, i).encode() for i in range(3)} <= set(hosts)
        cursors = [await redis_client.get(keys.cursor("repo_backfill", pds_host(net, i))) for i in range(3)]
        assert cursors == [CURSOR_DONE.encode()] * 3


async def test_relay_only_discovery_misses_the_omitted_accounts(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=40, pds_hosts=2, seed=12, relay_omit_fraction=0.1)) as net:
        config = ingester_config(redis_url, prefix, net.relay_url, discovery="relay")
        async with listing(redis_client, config) as ingester:
            assert ingester.discoveries == []
            relay_key = keys.cursor("repo_backfill", host_key(net.relay_url))
            await wait_until(lambda: _done(redis_client, relay_key), what="relay listing done")
        omitted = {a.did for a in net.world.accounts if a.relay_omitted}
        listed = {j.did for j in await jobs(redis_client, keys)}
        assert len(omitted) == 4 and not omitted & listed
        assert listed | omitted == {a.did for a in net.world.accounts}


async def test_recheck_enqueues_only_new_or_changed_repos(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=30, pds_hosts=2, seed=13, relay_omit_fraction=0.1)) as net:
        config = ingester_config(redis_url, prefix, net.relay_url, list_limit=4, recheck_interval_s=0.2)
        async with listing(redis_client, config) as ingester:
            [relay] = ingester.listings
            await wait_until(lambda: relay.passes >= 3, what="three relay passes")
            await until_round(redis_client, keys, net, 3)
            before = {a.did: (a.rev, a.active) for a in net.world.accounts}
            first = Counter(j.did for j in await jobs(redis_client, keys))
            # Three passes of every path over an unchanged network: each repo once, no more.
            assert set(first) == set(before) and set(first.values()) == {1}

            net.step(40)  # commits (new revs), maybe status changes
            after = {a.did: (a.rev, a.active) for a in net.world.accounts}
            changed = {did for did in after if after[did] != before[did]}
            assert changed
            passes = relay.passes
            rounds = await discovery_rounds(redis_client, keys, host_key(net.relay_url))
            await wait_until(lambda: relay.passes >= passes + 2, what="two more relay passes")
            await until_round(redis_client, keys, net, rounds + 2)
        listed = await jobs(redis_client, keys)
        counts = Counter(j.did for j in listed)
        # An account that moved is listed by the host it left too (deactivated, at the rev it left
        # with): checked apart, below.
        moved = {a.did for a in net.world.accounts if a.moved_from}
        assert {did for did, n in counts.items() if n > 1} - moved == changed - moved
        assert all(
            counts[did] == 2 for did in changed - moved
        )  # re-enqueued once, by whichever path saw it first
        assert all(counts[did] == 1 for did in set(after) - changed - moved)
        for did in moved:
            again = [j for j in listed[sum(first.values()) :] if j.did == did]
            _moved_jobs(net, did, again, changed=did in changed)


def _moved_jobs(net: Devnet, did: str, jobs: list[Any], *, changed: bool) -> None:
    """A moved account's re-check jobs: at most one active, at its rev (exactly one if its rev or
    status changed), and at most one inactive, from a host it left, at the rev it left with (a
    rev never listed before; it is not stale when the new host's newer rev came after it)."""
    account = net.world.by_did[did]
    active = [j for j in jobs if j.active]
    assert len(active) == 1 if changed else len(active) <= 1
    assert all(j.rev == account.rev for j in active)
    left = {net.pds_urls[i]: departure.rev for i, departure in account.moved_from.items()}
    inactive = [(j.host, j.rev, j.status) for j in jobs if not j.active]
    assert len(inactive) <= 1
    assert all(
        (host in left, rev, status) == (True, left.get(host), "deactivated") for host, rev, status in inactive
    )


async def test_hosts_are_paged_a_bounded_number_at_a_time(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=40, pds_hosts=5, seed=18, relay_omit_fraction=0.2)) as net:
        config = ingester_config(redis_url, prefix, net.relay_url, list_limit=2, host_concurrency=2)
        async with listing(redis_client, config) as ingester:
            await until_round(redis_client, keys, net, 1)
            [discovery] = ingester.discoveries
        assert discovery.max_in_flight == 2 and discovery.in_flight == 0
        assert len(discovery.sources) == 5 and all(s.passes == 1 for s in discovery.sources)
        counts = Counter(j.did for j in await jobs(redis_client, keys))
        assert set(counts) == {a.did for a in net.world.accounts} and set(counts.values()) == {1}


async def test_new_host_in_listhosts_is_paged_on_recheck(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    faults = FaultConfig(hidden_hosts=frozenset({2}))
    config = DevnetConfig(repos=60, pds_hosts=3, seed=14, relay_omit_fraction=0.3, faults=faults)
    async with Devnet(config) as net:
        hidden = {a.did for a in net.world.accounts if a.relay_omitted and a.pds == 2}
        assert hidden
        ingester = ingester_config(redis_url, prefix, net.relay_url, recheck_interval_s=0.2)
        async with listing(redis_client, ingester):
            await until_round(redis_client, keys, net, 1)
            assert not hidden & {j.did for j in await jobs(redis_client, keys)}
            assert await redis_client.get(keys.cursor("repo_backfill", pds_host(net, 2))) is None
            net.faults.hidden_hosts.clear()  # the relay crawls the host: listHosts shows it
            rounds = await discovery_rounds(redis_client, keys, host_key(net.relay_url))
            await until_round(redis_client, keys, net, rounds + 2)
        counts = Counter(j.did for j in await jobs(redis_client, keys))
        assert set(counts) == {a.did for a in net.world.accounts} and set(counts.values()) == {1}
        assert await redis_client.get(keys.cursor("repo_backfill", pds_host(net, 2))) == CURSOR_DONE.encode()


async def test_host_failures_are_ledgered_per_host_without_stopping_others(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=60, pds_hosts=3, seed=15, relay_omit_fraction=0.5)) as net:
        hosted = [a for a in net.world.accounts if a.pds == 0]
        start = account_id(hosted[3])  # the cursor after PDS 0's first page (of 4): it always fails
        net.faults.fail_pds_list_cursors.add((0, str(start)))
        net.faults.extra_hosts.append({"hostname": "127.0.0.1:9", "status": "active"})  # nothing listens
        config = ingester_config(redis_url, prefix, net.relay_url, list_limit=4, host_concurrency=2)
        async with listing(redis_client, config) as ingester:
            await until_round(redis_client, keys, net, 1, timeout=60)
            [discovery] = ingester.discoveries
            dead = discovery.source("127.0.0.1:9")
            assert dead.abandoned == 1 and dead.listed == 0
        ledger = await skipped_ranges(redis_client, keys.ledger("repo_backfill", pds_host(net, 0)))
        assert [(r.start, r.end, r.failures) for r in ledger] == [(str(start), str(start + 10), 3)]
        for i in (1, 2):
            assert await skipped_ranges(redis_client, keys.ledger("repo_backfill", pds_host(net, i))) == []
        skipped = {a.did for a in hosted if start < account_id(a) <= start + 10 and a.relay_omitted}
        assert skipped
        listed = {j.did for j in await jobs(redis_client, keys)}
        assert listed == {a.did for a in net.world.accounts} - skipped  # every other host was paged

        net.faults.clear()
        assert await retry_skipped(config) == 0
        assert await skipped_ranges(redis_client, keys.ledger("repo_backfill", pds_host(net, 0))) == []
        counts = Counter(j.did for j in await jobs(redis_client, keys))
        assert set(counts) == {a.did for a in net.world.accounts} and set(counts.values()) == {1}


async def test_bad_listhosts_items_are_dead_lettered_with_a_reason(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    bad: list[Any] = [
        42,
        {"hostname": "https://pds.example.com/xrpc"},
        {"status": "active"},
        {"hostname": "pds.example.com", "accountCount": "many"},
        {"hostname": "pds.example.com:70000"},
    ]
    async with Devnet(DevnetConfig(repos=10, pds_hosts=2, seed=16)) as net:
        net.faults.extra_hosts += [*bad, {"hostname": "gone.example.com", "status": "offline"}]
        async with listing(redis_client, ingester_config(redis_url, prefix, net.relay_url)) as ingester:
            await until_round(redis_client, keys, net, 1)
            assert ingester.discoveries[0].bad_items == len(bad)
    dlq = [f for _, f in await xrange(redis_client, keys.dlq(keys.stream("repo_backfill")))]
    assert len(dlq) == len(bad)
    assert {f[b"reason"] for f in dlq} == {b"invalid-host-item"}
    assert all(f[b"host"] == host_key(net.relay_url).encode() and f[b"error"] for f in dlq)
    hosts = await redis_client.hgetall(keys.hosts("repo_backfill", host_key(net.relay_url)))
    assert b"gone.example.com" in hosts  # recorded, but an offline host is not paged
    assert await redis_client.get(keys.cursor("repo_backfill", "gone.example.com")) is None


async def _done(redis: aioredis.Redis, key: str) -> bool:
    return await redis.get(key) == CURSOR_DONE.encode()


async def test_relist_forgets_the_register_and_the_cursors(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=20, pds_hosts=2, seed=17, relay_omit_fraction=0.1)) as net:
        config = ingester_config(redis_url, prefix, net.relay_url)
        relay_key = keys.cursor("repo_backfill", host_key(net.relay_url))
        for expected in (1, 2):
            async with listing(redis_client, config):
                await wait_until(lambda: _done(redis_client, relay_key), what="relay listing done")
                await until_round(redis_client, keys, net, expected)
            counts = Counter(j.did for j in await jobs(redis_client, keys))
            assert set(counts) == {a.did for a in net.world.accounts} and set(counts.values()) == {expected}
            if expected == 1:
                assert await relist(config) == 0
                assert "listing cursor(s)" in capsys.readouterr().out
                assert await redis_client.get(relay_key) is None
                assert not [k async for k in redis_client.scan_iter(keys.listed_pattern("repo_backfill"))]


async def test_killed_mid_host_paging_resumes_without_loss_or_duplicates(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=240, pds_hosts=3, seed=19, relay_omit_fraction=0.2)) as net:
        env = {
            **os.environ, "REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix,
            "STREAMFILL_ALLOW_PRIVATE_HOSTS": "true",
            "INGESTER_RELAY_HOSTS": net.relay_url, "INGESTER_MODE": "backfill", "INGESTER_LIST_LIMIT": "2",
            "INGESTER_DISCOVERY": "hosts", "INGESTER_HOST_CONCURRENCY": "3",
        }  # fmt: skip
        cursors = [keys.cursor("repo_backfill", pds_host(net, i)) for i in range(3)]

        async def some_cursor() -> bool:
            return any([await redis_client.get(c) for c in cursors])

        cmd = [sys.executable, "-m", "workers.cli", "ingester"]
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        try:
            await wait_until(some_cursor, what="a host's first page written")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            proc.kill()
        assert await discovery_rounds(redis_client, keys, host_key(net.relay_url)) == 0  # died mid-round
        listed_before = len(await jobs(redis_client, keys))
        config = ingester_config(redis_url, prefix, net.relay_url, discovery="hosts")
        async with listing(redis_client, config):
            await until_round(redis_client, keys, net, 1, timeout=60)
        counts = Counter(j.did for j in await jobs(redis_client, keys))
        assert listed_before < len(counts)
        assert set(counts) == {a.did for a in net.world.accounts} and set(counts.values()) == {1}


async def test_a_failing_listhosts_still_pages_the_hosts_known_from_earlier_rounds(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=20, pds_hosts=2, seed=20)) as net:
        config = ingester_config(redis_url, prefix, net.relay_url, recheck_interval_s=0.2)
        async with listing(redis_client, config) as ingester:
            await until_round(redis_client, keys, net, 1)
            [discovery] = ingester.discoveries
            net.faults.fail_list_hosts = True
            rounds = await discovery_rounds(redis_client, keys, host_key(net.relay_url))
            passes = [s.passes for s in discovery.sources]
            await until_round(redis_client, keys, net, rounds + 2)
            assert net.faults.snapshot()["list_hosts_503"] >= 3  # max_consecutive_errors, each round
            assert all(s.passes > p for s, p in zip(discovery.sources, passes, strict=True))


@pytest.mark.parametrize("discovery", ["hosts", "both"])
async def test_a_moved_account_listed_by_both_hosts_is_not_enqueued_again_each_round(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, discovery: str
) -> None:
    """The host an account left lists it deactivated at the rev it left with, the new one active
    at that same rev: a re-check must not take that for a change (the register would flip and
    every round re-download the repo), and the account is backfilled from its new host."""
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=20, pds_hosts=2, seed=21)) as net:
        mover = next(a for a in net.world.accounts if a.active and a.pds == 0 and len(a.records) > 1)
        net.move(mover.did, 1)  # no commit after the move: both hosts list the same rev
        config = ingester_config(
            redis_url, prefix, net.relay_url, discovery=discovery, recheck_interval_s=0.2
        )
        async with listing(redis_client, config) as ingester:
            await until_round(redis_client, keys, net, 1)
            relays = ingester.listings  # none with discovery "hosts"
            await wait_until(lambda: all(r.passes >= 1 for r in relays), what="relay listing done")
            first = [j for j in await jobs(redis_client, keys) if j.did == mover.did]
            await until_round(redis_client, keys, net, 4)
            await wait_until(lambda: all(r.passes >= 3 for r in relays), what="three relay passes")
        moved = [j for j in await jobs(redis_client, keys) if j.did == mover.did]
        assert moved == first  # three more rounds of both hosts: no job for it
        assert moved[-1].active and moved[-1].host in (net.pds_urls[1], net.relay_url)
        counts = Counter(j.did for j in await jobs(redis_client, keys))
        assert all(counts[a.did] == 1 for a in net.world.accounts if a.did != mover.did)
        await _backfill(redis_client, redis_url, prefix, net, mover.did)
    markers = [
        m for m in await read_all(redis_client, keys.stream("firehose_backfill")) if isinstance(m, RepoMarker)
    ]
    # One download per active job (the inactive one only records an outcome), each from its new host.
    assert len(markers) == sum(j.active for j in moved)
    assert all(m.did == mover.did and m.records == len(mover.records) for m in markers)


async def _backfill(redis: aioredis.Redis, redis_url: str, prefix: str, net: Devnet, did: str) -> None:
    """Run the backfiller's handler over every listed job of `did`, in stream order."""
    stream = Keys(prefix).stream("repo_backfill")
    async with build_backfiller(redis, backfiller_config(redis_url, prefix, net.plc_url)) as worker:
        for job_id, fields in await xrange(redis, stream):
            if decode_entry("repo_backfill", fields).did == did:
                entry = Entry(stream, job_id.decode(), fields, 1)
                assert await worker.handler.handle(entry) is DONE
