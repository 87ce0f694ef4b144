"""Campaign discovery counts accounts, not listings: an inactive account listed by the relay and by
its PDS is skipped once, and an account that moved (inactive where it left, active where it went)
is planned, not counted as skipped."""

from __future__ import annotations

import pytest

from devnet import Devnet, DevnetConfig, FaultConfig
from tests.workers._campaign import config
from workers.campaign.discover import network

pytestmark = pytest.mark.anyio


async def test_inactive_accounts_are_counted_once_and_moved_ones_are_planned(
    redis_url: str, prefix: str
) -> None:
    faults = FaultConfig(deactivated=3)
    async with Devnet(DevnetConfig(repos=12, pds_hosts=2, seed=11, faults=faults)) as net:
        inactive = {a.did for a in net.world.accounts if a.status != "active"}
        assert len(inactive) == 3
        mover = next(a for a in net.world.accounts if a.status == "active")
        net.move(mover.did, 1 - mover.pds)
        async with network(config(redis_url, prefix, net)) as found:
            repos, skipped = await found.discover((net.relay_url,), "both")
    assert skipped == 3  # each listed by the relay and by its PDS: one account each
    dids = [r.did for r in repos]
    assert sorted(dids) == sorted(a.did for a in net.world.accounts if a.did not in inactive)
    assert mover.did in dids  # listed inactive by the host it left, active by its new one
