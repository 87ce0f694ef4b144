"""A listRepos cursor that does not advance (issue #13 item 6: 4,055 pages and 81,100 jobs in 40 s
for a 50-repo relay) ends the pass: the range is ledgered, every repo is enqueued once, and the
host is paged again only at the next re-check. A listHosts cursor that does not advance ends the
round's listing of hosts, and so does a listHosts that keeps failing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from streams import CURSOR_DONE, Keys, host_key, skipped_ranges
from streams.admin import skip_ledgers
from tests._hostile import LIST_REPOS, HostileServer, json_answer
from tests._support import wait_until
from tests.workers._pipeline import ingester_config, read_all
from workers.ingester.discovery import HostDiscovery
from workers.ingester.worker import build_ingester

pytestmark = pytest.mark.anyio

LIST_HOSTS = "/xrpc/com.atproto.sync.listHosts"


def _did(n: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "did:plc:" + f"cycle{letters[n // 26]}{letters[n % 26]}".ljust(24, "a")


def cycling_relay(next_cursor: dict[str, str]) -> Any:
    """listRepos whose cursor after `c` is `next_cursor[c]` ("" = no cursor); 5 repos a page."""

    async def answer(request: web.Request) -> web.StreamResponse:
        cursor = request.query.get("cursor", "")
        page = sorted(next_cursor).index(cursor)
        repos = [{"did": _did(page * 5 + i), "head": "x", "rev": "3l", "active": True} for i in range(5)]
        return web.json_response({"repos": repos, "cursor": next_cursor[cursor]})

    return answer


@pytest.mark.parametrize(
    ("links", "pages", "stuck_at"),
    [
        ({"": "same", "same": "same"}, 2, "same"),  # the same cursor forever
        ({"": "a", "a": "b", "b": "c", "c": "a"}, 4, "c"),  # a cycle back to an earlier page
    ],
    ids=["same-cursor", "cycle"],
)
async def test_a_cursor_that_does_not_advance_ends_the_pass_with_a_ledgered_range(
    redis_client: aioredis.Redis,
    redis_url: str,
    prefix: str,
    links: dict[str, str],
    pages: int,
    stuck_at: str,
) -> None:
    keys = Keys(prefix)
    async with HostileServer() as relay:
        relay.on(LIST_REPOS, cycling_relay(links))
        config = ingester_config(redis_url, prefix, relay.base, discovery="relay")
        cursor_key = keys.cursor("repo_backfill", host_key(relay.base))
        async with build_ingester(redis_client, config) as ingester, anyio.create_task_group() as tg:
            [source] = ingester.listings
            tg.start_soon(source.run)
            await wait_until(lambda: source.cycles >= 1, what="the cycle seen")
            assert await redis_client.get(cursor_key) == CURSOR_DONE.encode()
            # Re-paging the ledgered range meets the cycle again and says so, once.
            assert await source.retry_skipped() == (0, 1)
            source.stop()
        hits = relay.hits[LIST_REPOS]
    assert hits == pages + pages - 1  # the pass, then the retry from the ledgered cursor
    jobs = await read_all(redis_client, keys.stream("repo_backfill"))
    counts = Counter(j.did for j in jobs)
    assert set(counts.values()) == {1} and len(counts) == 5 * len(links)
    [skipped] = await skipped_ranges(redis_client, keys.ledger("repo_backfill", host_key(relay.base)))
    assert (skipped.start, skipped.end) == (stuck_at, CURSOR_DONE)
    assert "does not advance" in skipped.reason
    assert list((await skip_ledgers(redis_client, keys)).values()) == [1]


async def test_a_list_hosts_cursor_that_does_not_advance_ends_the_host_listing(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """listHosts sends back the cursor it was asked for, forever: the round lists hosts twice,
    then pages the host it found (the same server, whose listRepos has one page) and ends."""
    async with HostileServer() as relay:
        hostname = relay.base.removeprefix("http://")
        relay.on(
            LIST_HOSTS, json_answer({"hosts": [{"hostname": hostname, "status": "active"}], "cursor": "x"})
        )
        relay.on(LIST_REPOS, cycling_relay({"": ""}))
        discovery = await _one_discovery_round(redis_client, redis_url, prefix, relay.base)
        assert discovery.cycles == 1 and relay.hits[LIST_HOSTS] == 2
    jobs = await read_all(redis_client, Keys(prefix).stream("repo_backfill"))
    assert sorted(j.did for j in jobs) == [_did(i) for i in range(5)]


async def test_a_list_hosts_that_keeps_failing_ends_the_listing_and_pages_the_hosts_it_found(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """listHosts answers its first page, then fails at the second: the page is asked again from
    the cursor it got to (not from the start), max_consecutive_errors times, then the round goes
    on and pages the host of the first page."""
    asked: list[str] = []
    async with HostileServer() as relay:
        hostname = relay.base.removeprefix("http://")

        async def list_hosts(request: web.Request) -> web.StreamResponse:
            asked.append(request.query.get("cursor", ""))
            if asked[-1]:
                return web.json_response({"error": "Unavailable"}, status=503)
            return web.json_response({"hosts": [{"hostname": hostname}], "cursor": "p2"})

        relay.on(LIST_HOSTS, list_hosts)
        relay.on(LIST_REPOS, cycling_relay({"": ""}))
        discovery = await _one_discovery_round(redis_client, redis_url, prefix, relay.base)
        assert asked == ["", "p2", "p2", "p2"]  # max_consecutive_errors = 3
        assert discovery.listing.runner.abandoned == 1 and discovery.cycles == 0
    jobs = await read_all(redis_client, Keys(prefix).stream("repo_backfill"))
    assert sorted(j.did for j in jobs) == [_did(i) for i in range(5)]


async def _one_discovery_round(
    redis: aioredis.Redis, redis_url: str, prefix: str, relay: str
) -> HostDiscovery:
    """Run hosts discovery against `relay` until its first round is over; the discovery, stopped."""
    config = ingester_config(redis_url, prefix, relay, discovery="hosts")
    async with build_ingester(redis, config) as ingester, anyio.create_task_group() as tg:
        [discovery] = ingester.discoveries
        tg.start_soon(discovery.run)
        await wait_until(lambda: discovery.rounds >= 1, what="a discovery round finished")
        discovery.stop()
    return discovery
