"""Account lifecycle on the firehose, against devnet: reactivation snapshots, stale `#account`
events from a host the account left, moves followed by the backfiller, deleted accounts.

The issue this pins (#10): a repo listed as inactive, reactivated later, was never snapshotted.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from devnet import Devnet, DevnetConfig
from schemas import Account, RepoJob, RepoMarker
from streams import DONE, Entry, Keys, host_key
from tests._support import wait_until, xrange
from tests.workers._pipeline import backfiller_config, cursor_at, ingester_config, read_all
from workers.backfiller.worker import build_backfiller
from workers.ingester.worker import build_ingester

pytestmark = pytest.mark.anyio


async def _ingest(redis: aioredis.Redis, redis_url: str, prefix: str, net: Devnet, act: Any) -> None:
    """Run a firehose ingester while `act()` changes the world; return once it has caught up."""
    keys = Keys(prefix)
    config = ingester_config(redis_url, prefix, net.relay_url, mode="firehose", plc_url=net.plc_url)
    cursor_key = keys.cursor("firehose_live", host_key(net.relay_url))
    async with build_ingester(redis, config) as ingester, anyio.create_task_group() as tg:
        [source] = ingester.firehoses
        tg.start_soon(source.run)
        await wait_until(lambda: net.world.firehose.subscribers > 0, what="subscribed")
        act()
        last = net.world.firehose.last_seq
        await wait_until(lambda: cursor_at(redis, cursor_key, last), timeout=30, what="caught up")
        source.stop()


def _active_dids(net: Devnet, pds: int | None = None) -> list[str]:
    return [
        a.did for a in net.world.accounts if a.active and len(a.records) > 1 and (pds is None or a.pds == pds)
    ]


async def test_reactivation_enqueues_one_snapshot_and_inactive_is_confirmed(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=20, pds_hosts=2, seed=31)) as net:
        flapper, quitter, stale = _active_dids(net)[:3]

        def act() -> None:
            for status in ("deactivated", "active", "takendown", "active"):
                net.set_status(flapper, status)  # two reactivations: two snapshots, no more
            net.set_status(quitter, "deactivated")  # stays deactivated: confirmed, applied
            # A stale "takendown" from a host that no longer speaks for the account: the PDS
            # that hosts it says active, so the event is not believed.
            account = net.world.by_did[stale]
            account.status = "takendown"
            net.set_status(stale, "takendown")
            account.status = "active"

        await _ingest(redis_client, redis_url, prefix, net, act)
    events = [e for e in await read_all(redis_client, keys.stream("firehose_live")) if isinstance(e, Account)]
    seen = [(e.did, e.active, e.status) for e in events]
    # Confirmation asks for the status *now*: by the time the ingester reads the flapper's
    # "deactivated" and "takendown", its PDS says active again, so only the reactivations are
    # applied (the end state is the same); the quitter's is confirmed; the stale one dropped.
    assert seen == [(flapper, True, None), (flapper, True, None), (quitter, False, "deactivated")]
    jobs = [j for j in await read_all(redis_client, keys.stream("repo_backfill")) if isinstance(j, RepoJob)]
    assert [(j.did, j.reason) for j in jobs] == [(flapper, "reactivated"), (flapper, "reactivated")]


async def test_a_move_is_followed_and_the_old_hosts_account_event_is_dropped(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=20, pds_hosts=2, seed=32)) as net:
        mover = _active_dids(net, pds=0)[0]
        backfiller = backfiller_config(redis_url, prefix, net.plc_url)
        async with build_backfiller(redis_client, backfiller) as worker:
            # The backfiller has resolved the DID (cached: PDS 0) before the account moves.
            await worker.identities.resolve(mover)
            await _ingest(redis_client, redis_url, prefix, net, lambda: net.move(mover, 1))
            # The move's own jobs: one snapshot when the new host announced the account active.
            jobs = [j for j in await read_all(redis_client, keys.stream("repo_backfill"))]
            assert [(j.did, j.reason) for j in jobs] == [(mover, "reactivated")]
            [job_id] = [i for i, _ in await xrange(redis_client, keys.stream("repo_backfill"))]
            [(_, fields)] = await xrange(redis_client, keys.stream("repo_backfill"))
            entry = Entry(keys.stream("repo_backfill"), job_id.decode(), fields, 1)
            assert await worker.handler.handle(entry) is DONE
        records = len(net.world.by_did[mover].records)
    events = [e for e in await read_all(redis_client, keys.stream("firehose_live")) if isinstance(e, Account)]
    assert [(e.did, e.active) for e in events] == [(mover, True)]  # the old host's "deactivated" dropped
    [marker] = [
        m for m in await read_all(redis_client, keys.stream("firehose_backfill")) if isinstance(m, RepoMarker)
    ]
    assert marker.did == mover and marker.records == records  # fetched from the new PDS
