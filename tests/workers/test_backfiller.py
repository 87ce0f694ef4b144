"""Backfiller against devnet: records == truth, permanent outcomes, dead letters, per-host 429s."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from devnet import Devnet, DevnetConfig, FaultConfig
from schemas import RecordCreate, RepoMarker
from streams import Keys
from tests._support import wait_until, xrange
from tests.workers._pipeline import backfiller_config, ingester_config, read_all
from tests.workers.test_listing import run_listing_until_done
from workers.backfiller.handler import BackfillHandler
from workers.backfiller.worker import build_backfiller

pytestmark = pytest.mark.anyio


async def drained(redis: aioredis.Redis, stream: str, group: str) -> bool:
    groups = {g["name"].decode(): g for g in await redis.xinfo_groups(stream)}
    g = groups.get(group)
    return g is not None and g["pending"] == 0 and g["lag"] == 0


async def backfill_all(redis: aioredis.Redis, config: Any) -> Any:
    keys = Keys(config.prefix)
    async with build_backfiller(redis, config) as worker, anyio.create_task_group() as tg:
        tg.start_soon(worker.consumer.run)
        await wait_until(
            lambda: drained(redis, keys.stream("repo_backfill"), config.group),
            timeout=60,
            what="repo_backfill drained",
        )
        worker.consumer.stop()
    return worker


def snapshot_records(events: list[Any]) -> dict[str, set[tuple[str, str, str]]]:
    by_did: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for e in events:
        if isinstance(e, RecordCreate):
            by_did[e.did].add((e.collection, e.rkey, e.cid))
    return by_did


async def test_backfilled_records_equal_devnet_truth(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    faults = FaultConfig(
        takendown=2,
        deactivated=1,
        missing=1,
        rate_limit_pds=frozenset({1}),
        rate_limit_fraction=0.3,
        retry_after_s=1,
    )
    async with Devnet(DevnetConfig(repos=40, pds_hosts=3, seed=11, faults=faults)) as net:
        healthy = [a.did for a in net.world.accounts if a.status == "active" and not a.missing]
        net.faults.bad_sig_dids.add(healthy[0])
        net.faults.truncate_dids.add(healthy[1])
        bad = {healthy[0], healthy[1]}
        await run_listing_until_done(redis_client, ingester_config(redis_url, prefix, net.relay_url), net)
        worker = await backfill_all(
            redis_client, backfiller_config(redis_url, prefix, net.plc_url, max_deliveries=6)
        )
        truth = net.truth()
    expected: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for t in truth:
        if t["type"] == "record" and t["did"] not in bad:
            expected[t["did"]].add((t["collection"], t["rkey"], t["cid"]))
    events = await read_all(redis_client, keys.stream("firehose_backfill"))
    got = snapshot_records(events)
    assert got == expected
    assert all(e.seq == -1 for e in events)
    markers = {e.did: e for e in events if isinstance(e, RepoMarker)}
    repo_revs = {t["did"]: t["rev"] for t in truth if t["type"] == "repo"}
    assert set(markers) == set(expected) | {
        d for d, s in _statuses(truth).items() if s == "active" and d not in bad
    }
    for did, marker in markers.items():
        assert marker.rev == repo_revs[did] and marker.records == len(expected.get(did, ()))
        # Every record event of a snapshot carries the snapshot's commit rev.
        assert {e.rev for e in events if isinstance(e, RecordCreate) and e.did == did} <= {marker.rev}

    outcomes = [f for _, f in await xrange(redis_client, keys.outcomes("repo_backfill"))]
    kinds = sorted(f[b"outcome"].decode() for f in outcomes)
    assert kinds == ["deactivated", "not_found", "takendown", "takendown"]
    dlq = await xrange(redis_client, keys.stream("repo_backfill:dlq"))
    reasons = {f[b"reason"].decode() for _, f in dlq}
    assert len(dlq) == 2, reasons
    assert reasons == {"bad-signature", "CarTruncatedError"}
    assert worker.handler.repos_done == len(markers)


def _statuses(truth: list[dict[str, Any]]) -> dict[str, str]:
    return {t["did"]: t["status"] for t in truth if t["type"] == "repo"}


async def test_a_read_takes_several_repos_and_a_stuck_one_holds_only_its_own_slot(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs come `repos_per_read` to a read, yet at most `concurrency` repos are worked on at once,
    and a repo whose download hangs keeps one of those slots, not the rest of its batch: every
    other repo is backfilled during its first hang (nothing retried yet); it is done after its
    timeout and a retry."""
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=14, pds_hosts=2, seed=5)) as net:
        dids = [a.did for a in net.world.accounts if a.status == "active" and not a.missing]
        stuck = dids[0]
        net.faults.hang_dids.add(stuck)
        await run_listing_until_done(redis_client, ingester_config(redis_url, prefix, net.relay_url), net)
        config = backfiller_config(
            redis_url, prefix, net.plc_url, concurrency=2, repos_per_read=4, http_timeout_s=8.0
        )
        active, most, reads = 0, 0, []
        call = BackfillHandler.__call__

        async def batch(self: BackfillHandler, entries: Any) -> Any:
            reads.append(len(entries))
            return await call(self, entries)

        monkeypatch.setattr(BackfillHandler, "__call__", batch)
        async with build_backfiller(redis_client, config) as worker, anyio.create_task_group() as tg:
            handle = worker.handler.handle

            async def counted(entry: Any) -> Any:
                nonlocal active, most
                active += 1
                most = max(most, active)
                try:
                    return await handle(entry)
                finally:
                    active -= 1

            worker.handler.handle = counted  # type: ignore[method-assign]
            tg.start_soon(worker.consumer.run)

            async def markers() -> set[str]:
                events = await read_all(redis_client, keys.stream("firehose_backfill"))
                return {e.did for e in events if isinstance(e, RepoMarker)}

            others = set(dids) - {stuck}
            await wait_until(lambda: _covers(markers(), others), timeout=30, what="every other repo done")
            assert stuck not in await markers()  # still hanging, in its own slot
            assert worker.consumer.statistics().retried == 0  # the others did not wait for its timeout
            net.faults.hang_dids.discard(stuck)
            await wait_until(lambda: _covers(markers(), {stuck}), timeout=30, what="the stuck repo done")
            worker.consumer.stop()
    assert most == 2
    assert max(reads) == 4


async def _covers(got: Awaitable[set[str]], wanted: set[str]) -> bool:
    return wanted <= await got
