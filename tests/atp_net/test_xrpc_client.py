"""atp.xrpc against the devnet: paging, error mapping, streamed getRepo, caps and timeouts."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from atp.did import DidResolver
from atp.errors import (
    CarTruncatedError,
    RateLimited,
    RepoDeactivated,
    RepoNotFound,
    RepoTakendown,
    RepoTooLarge,
    SignatureError,
    UpstreamError,
    XrpcError,
)
from atp.repo import read_repo
from atp.xrpc import XrpcClient, _parse_retry_after, base_url
from devnet import Devnet, FaultConfig
from tests.atp_net.conftest import StartNet

pytestmark = pytest.mark.anyio


def _by_status(net: Devnet, status: str) -> str:
    return next(a.did for a in net.world.accounts if a.truth_status == status and not a.missing)


def _truth_records(net: Devnet, did: str) -> dict[str, str]:
    return {
        f"{t['collection']}/{t['rkey']}": t["cid"]
        for t in net.truth()
        if t["type"] == "record" and t["did"] == did
    }


async def _all_dids(xrpc: XrpcClient, host: str, limit: int) -> list[str]:
    dids, cursor = [], None
    while True:
        page = await xrpc.list_repos(host, cursor, limit=limit)
        dids += [r["did"] for r in page.repos]
        if page.cursor is None:
            return dids
        cursor = page.cursor


async def test_list_repos_pages_every_did_exactly_once(net: Devnet, xrpc: XrpcClient) -> None:
    dids = await _all_dids(xrpc, net.relay_url, limit=7)
    omitted = {a.did for a in net.world.accounts if a.relay_omitted}
    assert omitted  # like the real relay, the devnet's leaves some accounts out
    assert sorted(dids) == sorted(set(net.world.all_dids) - omitted)
    assert len(dids) == len(set(dids))


async def test_list_hosts_names_the_hosts_whose_listings_hold_the_rest(net: Devnet, xrpc: XrpcClient) -> None:
    page = await xrpc.list_hosts(net.relay_url, limit=1)
    hosts = list(page.hosts)
    while page.cursor is not None:
        page = await xrpc.list_hosts(net.relay_url, page.cursor, limit=1)
        hosts += page.hosts
    assert [h["hostname"] for h in hosts] == [url.split("://")[1] for url in net.pds_urls]
    assert all(h["status"] == "active" and isinstance(h["accountCount"], int) for h in hosts)
    on_hosts = [did for url in net.pds_urls for did in await _all_dids(xrpc, url, limit=3)]
    missing = {a.did for a in net.world.accounts if a.missing}  # their PDS does not know them
    assert sorted(on_hosts) == sorted(set(net.world.all_dids) - missing)


async def test_list_repos_reports_status(net: Devnet, xrpc: XrpcClient) -> None:
    page = await xrpc.list_repos(net.relay_url, limit=1000)
    by_did = {r["did"]: r for r in page.repos}
    taken = by_did[_by_status(net, "takendown")]
    assert taken["active"] is False and taken["status"] == "takendown"
    assert all(r["head"].startswith("bafyrei") and len(r["rev"]) == 13 for r in page.repos)


async def test_pds_list_repos_only_lists_its_accounts(net: Devnet, xrpc: XrpcClient) -> None:
    dids = await _all_dids(xrpc, net.pds_urls[1], limit=5)
    assert set(dids) == {a.did for a in net.world.accounts if a.pds == 1 and not a.missing}


async def test_500_on_chosen_page_is_upstream_error(start_net: StartNet, xrpc: XrpcClient) -> None:
    net = await start_net(faults=FaultConfig(fail_list_pages=frozenset({1}), fail_list_times=1))
    first = await xrpc.list_repos(net.relay_url, limit=10)
    with pytest.raises(UpstreamError) as info:
        await xrpc.list_repos(net.relay_url, first.cursor, limit=10)
    assert info.value.status == 500 and not info.value.permanent
    retried = await xrpc.list_repos(net.relay_url, first.cursor, limit=10)  # recovers after one failure
    assert len(retried.repos) == 10
    assert net.stats()["faults"] == {"list_500": 1}


async def test_429_is_rate_limited_with_retry_after(start_net: StartNet, xrpc: XrpcClient) -> None:
    net = await start_net(
        faults=FaultConfig(rate_limit_pds=frozenset({0}), rate_limit_fraction=1.0, retry_after_s=3)
    )
    did = next(a.did for a in net.world.accounts if a.pds == 0 and a.active)
    with pytest.raises(RateLimited) as info:
        async with xrpc.get_repo(net.relay_url, did, max_bytes=10**8, timeout_s=5):
            pass
    assert info.value.retry_after_s == 3.0 and not info.value.permanent


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert _parse_retry_after(httpx.Headers({"retry-after": "7"}), now) == 7.0
    assert _parse_retry_after(httpx.Headers({"retry-after": date}), now) == pytest.approx(42.0, abs=1)
    assert _parse_retry_after(httpx.Headers({"ratelimit-reset": str(int(now) + 30)}), now) == 30.0
    assert base_url("relay.example") == "https://relay.example"


async def test_get_repo_via_relay_redirect_matches_truth(net: Devnet, xrpc: XrpcClient) -> None:
    account = max((a for a in net.world.accounts if a.active), key=lambda a: len(a.records))
    async with DidResolver(plc_url=net.plc_url) as resolver:
        key = (await resolver.resolve(account.did)).signing_key
    async with xrpc.get_repo(net.relay_url, account.did, max_bytes=10**8, timeout_s=5) as chunks:
        repo = await read_repo(chunks, did=account.did, signing_key=key)
    served = {key: cid for key, cid in repo.iter_keys()}
    assert served == _truth_records(net, account.did)
    assert repo.commit.rev == account.rev


@pytest.mark.parametrize(
    ("status", "error"),
    [("takendown", RepoTakendown), ("deactivated", RepoDeactivated), ("deleted", RepoNotFound)],
)
async def test_unavailable_repos_raise_permanent_errors(
    net: Devnet, xrpc: XrpcClient, status: str, error: type[XrpcError]
) -> None:
    did = next(a.did for a in net.world.accounts if a.truth_status == status)  # "deleted" = the missing repo
    with pytest.raises(error) as info:
        async with xrpc.get_repo(net.relay_url, did, max_bytes=10**8, timeout_s=5):
            pass
    assert info.value.permanent and info.value.error == error.__name__


async def test_unknown_did_on_relay_is_not_found(net: Devnet, xrpc: XrpcClient) -> None:
    with pytest.raises(RepoNotFound):
        async with xrpc.get_repo(
            net.relay_url, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", max_bytes=100, timeout_s=5
        ):
            pass


async def test_size_cap_raises_repo_too_large(net: Devnet, xrpc: XrpcClient) -> None:
    account = max(net.world.accounts, key=lambda a: len(a.records) if a.active else -1)
    with pytest.raises(RepoTooLarge):
        async with xrpc.get_repo(net.relay_url, account.did, max_bytes=1000, timeout_s=5) as chunks:
            async for _ in chunks:
                pass


async def test_hanging_response_times_out_as_upstream_error(start_net: StartNet, xrpc: XrpcClient) -> None:
    net = await start_net(faults=FaultConfig(hang_repos=frozenset({"0"})))
    started = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        async with xrpc.get_repo(
            net.relay_url, net.world.all_dids[0], max_bytes=10**8, timeout_s=0.5
        ) as chunks:
            async for _ in chunks:
                pass
    assert info.value.error == "Timeout" and time.monotonic() - started < 3
    assert net.stats()["faults"]["hang"] == 1


async def test_slow_response_beyond_deadline_times_out(start_net: StartNet, xrpc: XrpcClient) -> None:
    net = await start_net(faults=FaultConfig(slow_repos=frozenset({"0"}), slow_delay_s=2.0))
    with pytest.raises(UpstreamError):
        async with xrpc.get_repo(
            net.relay_url, net.world.all_dids[0], max_bytes=10**8, timeout_s=0.3
        ) as chunks:
            async for _ in chunks:
                pass


async def test_truncated_car_fails_in_the_codec(start_net: StartNet, xrpc: XrpcClient) -> None:
    net = await start_net(faults=FaultConfig(truncate_repos=frozenset({"0"})))
    with pytest.raises(CarTruncatedError):
        async with xrpc.get_repo(
            net.relay_url, net.world.all_dids[0], max_bytes=10**8, timeout_s=5
        ) as chunks:
            await read_repo(chunks)


async def test_bad_signature_fails_verification(start_net: StartNet, xrpc: XrpcClient) -> None:
    net = await start_net(faults=FaultConfig(bad_sig_repos=frozenset({"0"})))
    account = net.world.accounts[0]
    with pytest.raises(SignatureError):
        async with xrpc.get_repo(net.relay_url, account.did, max_bytes=10**8, timeout_s=5) as chunks:
            await read_repo(chunks, did=account.did, signing_key=account.key.public_key)


async def test_connection_refused_is_upstream_error(xrpc: XrpcClient) -> None:
    with pytest.raises(UpstreamError) as info:
        await xrpc.list_repos("http://127.0.0.1:9")
    assert info.value.error == "ConnectionError"


async def test_get_repo_status(net: Devnet, xrpc: XrpcClient) -> None:
    active = next(a for a in net.world.accounts if a.active)
    status = await xrpc.get_repo_status(net.pds_urls[active.pds], active.did)
    assert status.active and status.rev == active.rev
    taken = net.world.by_did[_by_status(net, "takendown")]
    status = await xrpc.get_repo_status(net.relay_url, taken.did)
    assert not status.active and status.status == "takendown"
