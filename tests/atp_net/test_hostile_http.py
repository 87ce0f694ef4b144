"""atp.xrpc / atp.did / atp.http against a hostile peer on loopback: content-coding bombs, drips,
floods, redirect loops, Retry-After abuse, and the status codes' classification.

Memory is measured with tracemalloc (every bytes object a decoder or reader makes is a traced
Python allocation); the worker process as a whole is measured in tests/workers/test_hostile_peers.py.
"""

from __future__ import annotations

import email.utils
import gzip
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

from atp.did import MAX_DOC_BYTES, DidResolver
from atp.errors import (
    AtpError,
    DidResolutionError,
    RateLimited,
    RepoTooLarge,
    RequestRejected,
    ResponseRejected,
    UpstreamError,
)
from atp.repo import read_repo
from atp.xrpc import LIST_REPOS_MAX_BYTES, XrpcClient
from tests._hostile import (
    GET_REPO,
    GET_REPO_STATUS,
    LIST_REPOS,
    HostileServer,
    bomb,
    car_bomb,
    drip,
    flood,
    json_answer,
    paced,
    raw_answer,
    redirect_loop,
    zeros_bomb,
)
from tests._support import LOOPBACK

pytestmark = pytest.mark.anyio

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
MIB = 1 << 20


@pytest.fixture
async def evil() -> AsyncIterator[HostileServer]:
    async with HostileServer() as server:
        yield server


@pytest.fixture
async def xrpc() -> AsyncIterator[XrpcClient]:
    async with XrpcClient(policy=LOOPBACK, timeout_s=5.0, max_retry_after_s=300) as client:
        yield client


async def _drain_repo(xrpc: XrpcClient, base: str, *, max_bytes: int, timeout_s: float = 5.0) -> None:
    async with xrpc.get_repo(base, DID, max_bytes=max_bytes, timeout_s=timeout_s) as chunks:
        async for _ in chunks:
            pass


async def _peak_bytes(call: Callable[[], Awaitable[Any]]) -> tuple[int, BaseException | None]:
    """Peak traced allocation (bytes) while `call` runs, and what it raised."""
    tracemalloc.start()
    try:
        error: BaseException | None = None
        try:
            await call()
        except Exception as exc:
            error = exc
        return tracemalloc.get_traced_memory()[1], error
    finally:
        tracemalloc.stop()


async def test_nested_gzip_is_refused_before_decoding(evil: HostileServer, xrpc: XrpcClient) -> None:
    evil.on(GET_REPO, bomb(zeros_bomb(2), layers=2))  # ~10 KB on the wire, 4 GiB inside
    peak, error = await _peak_bytes(lambda: _drain_repo(xrpc, evil.base, max_bytes=2 * 1024**3))
    assert isinstance(error, ResponseRejected) and error.permanent, error
    assert error.error == "BadContentEncoding" and "gzip, gzip" in str(error)
    assert peak < 4 * MIB, f"peak traced allocation {peak / MIB:.1f} MiB"


@pytest.mark.parametrize("coding", ["br", "deflate", "zstd", "gzip, identity, gzip", "compress"])
async def test_codings_we_did_not_ask_for_are_refused(
    evil: HostileServer, xrpc: XrpcClient, coding: str
) -> None:
    evil.on(LIST_REPOS, raw_answer(b'{"repos": []}', {"Content-Encoding": coding}))
    with pytest.raises(ResponseRejected) as info:
        await xrpc.list_repos(evil.base)
    assert info.value.error == "BadContentEncoding"


async def test_gzip_and_repeated_gzip_fields(evil: HostileServer, xrpc: XrpcClient) -> None:
    body = gzip.compress(orjson.dumps({"repos": [{"did": DID}]}))
    evil.on(LIST_REPOS, raw_answer(body, {"Content-Encoding": "gzip", "Content-Type": "application/json"}))
    assert (await xrpc.list_repos(evil.base)).repos == [{"did": DID}]  # one layer: decoded
    # Two Content-Encoding fields are one list (RFC 9110): gzip twice is a nested coding.
    evil.on(LIST_REPOS, raw_answer(body, {"Content-Encoding": "gzip"}))
    evil.on(GET_REPO_STATUS, _two_coding_fields(body))
    with pytest.raises(ResponseRejected):
        await xrpc.get_repo_status(evil.base, DID)


def _two_coding_fields(body: bytes) -> Any:
    async def answer(request: web.Request) -> web.StreamResponse:
        headers = CIMultiDict([("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")])
        return web.Response(body=body, headers=headers)

    return answer


async def test_single_gzip_bomb_stops_at_the_decoded_cap(evil: HostileServer, xrpc: XrpcClient) -> None:
    evil.on(GET_REPO, bomb(car_bomb(), layers=1))  # a valid CAR as far as anyone reads: 4 GiB
    cap = 16 * MIB

    async def backfill() -> None:
        async with xrpc.get_repo(evil.base, DID, max_bytes=cap, timeout_s=20) as chunks:
            await read_repo(chunks)

    started = time.process_time()
    peak, error = await _peak_bytes(backfill)
    assert isinstance(error, RepoTooLarge) and error.permanent, error
    # The reader keeps one (deduplicated) block; decoding never holds more than 256 KiB pieces.
    assert peak < cap, f"peak traced allocation {peak / MIB:.1f} MiB for a {cap / MIB:.0f} MiB cap"
    assert time.process_time() - started < 5
    assert evil.hits[GET_REPO] == 1


async def test_gzip_bomb_on_small_endpoints_is_capped(evil: HostileServer, xrpc: XrpcClient) -> None:
    evil.on(LIST_REPOS, bomb(zeros_bomb(1), layers=1, content_type="application/json"))
    peak, error = await _peak_bytes(lambda: xrpc.list_repos(evil.base))
    assert isinstance(error, ResponseRejected) and error.error == "BodyTooLarge", error
    assert peak < 3 * LIST_REPOS_MAX_BYTES
    evil.on(f"/{DID}", bomb(zeros_bomb(1), layers=1, content_type="application/json"))
    async with DidResolver(plc_url=evil.base) as resolver:
        with pytest.raises(DidResolutionError) as info:
            await resolver.resolve(DID)
    assert info.value.permanent and "BodyTooLarge" in str(info.value)


async def test_floods_are_cut_at_the_cap(evil: HostileServer, xrpc: XrpcClient) -> None:
    evil.on(LIST_REPOS, flood(b'{"repos": [' + b" " * 65536, total=200 * MIB))
    evil.on(GET_REPO_STATUS, flood(b" " * 65536, total=200 * MIB))
    evil.on(f"/{DID}", flood(b" " * 65536, total=200 * MIB))
    started = time.monotonic()
    peak, error = await _peak_bytes(lambda: xrpc.list_repos(evil.base))
    assert isinstance(error, ResponseRejected) and peak < 3 * LIST_REPOS_MAX_BYTES, (error, peak)
    peak, error = await _peak_bytes(lambda: xrpc.get_repo_status(evil.base, DID))
    assert isinstance(error, ResponseRejected) and peak < 2 * MIB, (error, peak)
    async with DidResolver(plc_url=evil.base) as resolver:
        peak, error = await _peak_bytes(lambda: resolver.resolve(DID))
    assert isinstance(error, DidResolutionError) and error.permanent and peak < 4 * MAX_DOC_BYTES
    assert time.monotonic() - started < 10  # three 200 MB bodies were not read to their end


@pytest.mark.parametrize("path", [LIST_REPOS, GET_REPO_STATUS, GET_REPO, f"/{DID}"])
async def test_a_drip_ends_at_the_call_deadline(evil: HostileServer, path: str) -> None:
    body = orjson.dumps({"repos": [], "did": DID, "active": True}) + b" " * 100
    evil.on(path, drip(body, interval_s=0.2))
    started = time.monotonic()
    async with (
        XrpcClient(policy=LOOPBACK, timeout_s=1.0) as xrpc,
        DidResolver(plc_url=evil.base, timeout_s=1.0) as did,
    ):
        with pytest.raises((UpstreamError, DidResolutionError)) as info:
            if path == LIST_REPOS:
                await xrpc.list_repos(evil.base)
            elif path == GET_REPO_STATUS:
                await xrpc.get_repo_status(evil.base, DID)
            elif path == GET_REPO:
                # 1 byte per 0.2 s buys nothing at 1 MiB/s: the base deadline holds.
                await _drain_repo(xrpc, evil.base, max_bytes=MIB, timeout_s=1.0)
            else:
                await did.resolve(DID)
    elapsed = time.monotonic() - started
    assert not getattr(info.value, "permanent", False)
    assert 0.9 < elapsed < 3, f"{path}: the drip held the call for {elapsed:.1f}s"


async def test_endless_redirects_stop_after_three(evil: HostileServer, xrpc: XrpcClient) -> None:
    evil.on(GET_REPO, redirect_loop())
    with pytest.raises(ResponseRejected) as info:
        await _drain_repo(xrpc, evil.base, max_bytes=MIB)
    assert info.value.error == "TooManyRedirects" and info.value.permanent
    assert evil.hits[GET_REPO] == 4  # the request and three redirects


async def test_retry_after_is_capped(evil: HostileServer, xrpc: XrpcClient) -> None:
    day = {"error": "RateLimitExceeded", "message": "come back tomorrow"}
    evil.on(LIST_REPOS, json_answer(day, status=429, headers={"Retry-After": "86400"}))
    with pytest.raises(RateLimited) as info:
        await xrpc.list_repos(evil.base)
    assert info.value.retry_after_s == 300
    later = email.utils.formatdate(time.time() + 7 * 86400, usegmt=True)
    evil.on(GET_REPO, json_answer(day, status=429, headers={"Retry-After": later}))
    with pytest.raises(RateLimited) as info:
        await _drain_repo(xrpc, evil.base, max_bytes=MIB)
    assert info.value.retry_after_s == 300
    evil.on(GET_REPO_STATUS, json_answer(day, status=429, headers={"Retry-After": "2"}))
    with pytest.raises(RateLimited) as info:
        await xrpc.get_repo_status(evil.base, DID)
    assert info.value.retry_after_s == 2


@pytest.mark.parametrize(
    ("status", "error", "permanent"),
    [
        (400, RequestRejected, True),  # an unknown error name
        (401, RequestRejected, True),
        (403, RequestRejected, True),
        (410, RequestRejected, True),
        (408, UpstreamError, False),
        (502, UpstreamError, False),
        (304, ResponseRejected, True),  # a 3xx that is not a redirect
    ],
)
async def test_status_classification(
    evil: HostileServer, xrpc: XrpcClient, status: int, error: type[AtpError], permanent: bool
) -> None:
    evil.on(GET_REPO, json_answer({"error": "SomethingElse", "message": "no"}, status=status))
    with pytest.raises(error) as info:
        await _drain_repo(xrpc, evil.base, max_bytes=MIB)
    assert info.value.permanent is permanent


async def test_large_repo_that_keeps_flowing_reaches_the_cap_not_the_deadline(evil: HostileServer) -> None:
    # 64 KiB every 20 ms (~3 MiB/s) for longer than timeout_s: each byte buys time at 1 MiB/s,
    # so the download ends at the cap (permanent) and is not retried as a timeout.
    evil.on(GET_REPO, paced(b"\0" * (64 * MIB), chunk=65536, interval_s=0.02))
    async with XrpcClient(policy=LOOPBACK, timeout_s=0.5) as xrpc:
        started = time.monotonic()
        with pytest.raises(RepoTooLarge):
            async with xrpc.get_repo(
                evil.base, DID, max_bytes=4 * MIB, timeout_s=0.5, min_bytes_per_s=MIB
            ) as chunks:
                async for _ in chunks:
                    pass
    assert time.monotonic() - started > 0.5
