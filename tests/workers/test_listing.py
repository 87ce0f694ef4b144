"""Ingester backfill mode against devnet: exactly once per pass, skip-ahead + ledger, retry, kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter

import anyio
import pytest
import redis.asyncio as aioredis

from devnet import Devnet, DevnetConfig, FaultConfig
from streams import CURSOR_DONE, Component, Keys, host_key, skipped_ranges
from streams.admin import skip_ledgers
from tests._support import wait_until, xrange, xreadgroup
from tests.workers._pipeline import ingester_config, read_all
from workers.ingester.config import IngesterConfig
from workers.ingester.discovery import discovery_rounds
from workers.ingester.worker import build_ingester

pytestmark = pytest.mark.anyio


async def listed_dids(redis: aioredis.Redis, keys: Keys) -> Counter[str]:
    return Counter(job.did for job in await read_all(redis, keys.stream("repo_backfill")))


async def run_listing_until_done(redis: aioredis.Redis, config: IngesterConfig, net: Devnet) -> None:
    """Run the ingester's listing components until the relay's pass and a discovery round are done."""
    keys = Keys(config.prefix)
    relay = host_key(net.relay_url)
    cursor_key = keys.cursor("repo_backfill", relay)
    async with build_ingester(redis, config) as ingester, anyio.create_task_group() as tg:
        components: list[Component] = [*ingester.listings, *ingester.discoveries]
        for component in components:
            tg.start_soon(component.run)
        if ingester.listings:
            await wait_until(lambda: _is_done(redis, cursor_key), what="listing finished")
        if ingester.discoveries:
            await wait_until(lambda: _rounds(redis, keys, relay), what="discovery round finished")
        for component in components:
            component.stop()


async def _rounds(redis: aioredis.Redis, keys: Keys, relay: str) -> bool:
    return await discovery_rounds(redis, keys, relay) > 0


async def _is_done(redis: aioredis.Redis, key: str) -> bool:
    return await redis.get(key) == CURSOR_DONE.encode()


async def test_every_did_is_listed_exactly_once_with_status(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    faults = FaultConfig(takendown=2, deactivated=2, missing=1)
    async with Devnet(DevnetConfig(repos=45, seed=3, faults=faults)) as net:
        await run_listing_until_done(redis_client, ingester_config(redis_url, prefix, net.relay_url), net)
        truth_repos = {t["did"]: t["status"] for t in net.truth() if t["type"] == "repo"}
    keys = Keys(prefix)
    counts = await listed_dids(redis_client, keys)
    assert set(counts) == set(truth_repos) and set(counts.values()) == {1}
    jobs = await read_all(redis_client, keys.stream("repo_backfill"))
    inactive = {j.did: j.status for j in jobs if not j.active}
    assert sorted(inactive.values()) == ["deactivated", "deactivated", "takendown", "takendown"]
    assert all(j.host in (net.relay_url, *net.pds_urls) and j.reason == "list" for j in jobs)


async def test_failing_page_is_skipped_ledgered_and_recovered(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(
        DevnetConfig(repos=40, seed=4, faults=FaultConfig(fail_list_pages=frozenset({1})))
    ) as net:
        config = ingester_config(redis_url, prefix, net.relay_url, discovery="relay")
        await run_listing_until_done(redis_client, config, net)
        all_dids = {t["did"] for t in net.truth() if t["type"] == "repo"}
        omitted = {a.did for a in net.world.accounts if a.relay_omitted}
        counts = await listed_dids(redis_client, keys)
        missing = all_dids - omitted - set(counts)
        assert len(missing) == 10  # one page of 10 accounts was skipped...
        ledger = await skipped_ranges(redis_client, keys.ledger("repo_backfill", host_key(net.relay_url)))
        assert len(ledger) == 1 and ledger[0].failures == 3
        assert "UpstreamError" in ledger[0].reason and "500" in ledger[0].reason
        assert int(ledger[0].end) - int(ledger[0].start) == 10  # ...and recorded, not lost

        assert await skip_ledgers(redis_client, keys) == {
            keys.ledger("repo_backfill", host_key(net.relay_url)): 1
        }
        net.faults.clear()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "STREAMFILL_PREFIX": prefix,
            "INGESTER_LIST_LIMIT": "10",
            "INGESTER_RELAY_HOSTS": net.relay_url,
            "INGESTER_MODE": "backfill",
            "INGESTER_DISCOVERY": "relay",
        }
        cmd = [sys.executable, "-m", "workers.cli", "ingester", "--retry-skipped"]
        out = await anyio.to_thread.run_sync(
            lambda: subprocess.run(cmd, env=env, capture_output=True, text=True)
        )
        assert out.returncode == 0, out.stderr
        assert "1 skipped range(s) recovered, 0 still failing" in out.stdout
        audit = [f for _, f in await xrange(redis_client, keys.audit())]
        assert [f[b"action"] for f in audit] == [b"ingester.retry_skipped"]
        assert await skipped_ranges(redis_client, keys.ledger("repo_backfill", host_key(net.relay_url))) == []
        assert set(await listed_dids(redis_client, keys)) == all_dids - omitted


async def test_killed_mid_paging_resumes_without_loss_or_duplicates(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=300, seed=5)) as net:
        env = {
            **os.environ, "REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix,
            "INGESTER_RELAY_HOSTS": net.relay_url, "INGESTER_MODE": "backfill", "INGESTER_LIST_LIMIT": "2",
        }  # fmt: skip
        cmd = [sys.executable, "-m", "workers.cli", "ingester"]
        cursor_key = keys.cursor("repo_backfill", host_key(net.relay_url))
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        try:
            await wait_until(lambda: redis_client.get(cursor_key), what="first page written")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            proc.kill()
        assert await redis_client.get(cursor_key) != CURSOR_DONE.encode()  # it died mid-way
        await run_listing_until_done(redis_client, ingester_config(redis_url, prefix, net.relay_url), net)
        all_dids = {t["did"] for t in net.truth() if t["type"] == "repo"}
    counts = await listed_dids(redis_client, keys)
    assert set(counts) == all_dids
    assert set(counts.values()) == {1}  # a page and its cursor are one MULTI: no duplicates either


async def test_listing_pauses_while_live_lags_and_resumes_below_the_lower_threshold(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """The ingester's listing (repo_backfill) waits on the live-lag throttle; its firehose does not."""
    keys = Keys(prefix)
    live = keys.stream("firehose_live")
    seconds, micros = await redis_client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    await redis_client.xadd(live, {"n": "1"}, id=f"{now_ms - 30_000}-0")  # 30 s behind
    await redis_client.xgroup_create(live, "firehose_group", id="0")
    async with Devnet(DevnetConfig(repos=20, seed=5)) as net:
        config = ingester_config(redis_url, prefix, net.relay_url, discovery="relay")
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            assert ingester.throttle is not None
            assert all(
                f.runner.producer is not None and f.runner.producer.throttle is None
                for f in ingester.firehoses
            )
            [listing] = ingester.listings
            tg.start_soon(listing.run)
            await wait_until(
                lambda: ingester.throttle is not None and ingester.throttle.paused, what="paused"
            )
            assert await redis_client.xlen(keys.stream("repo_backfill")) == 0
            rows = await xreadgroup(redis_client, "firehose_group", "indexer", {live: ">"})
            await redis_client.xack(live, "firehose_group", *[i for _, e in rows for i, _ in e])
            relay = host_key(net.relay_url)
            await wait_until(
                lambda: _is_done(redis_client, keys.cursor("repo_backfill", relay)), what="listed"
            )
            listing.stop()
    assert set((await listed_dids(redis_client, keys)).values()) == {1}
