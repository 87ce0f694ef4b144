"""`streamfill backfiller` as an OS process against hostile peers on loopback.

One hostile server plays the PLC directory and a PDS, a second one a PDS that rate-limits. Each
job meets one attack; each must end in the DLQ (or the outcome stream) with a reason, at once
where the input is bad, while the worker keeps running. The worker process itself is measured:
its peak RSS (VmHWM) and CPU time (utime + stime), read from /proc before it is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from atp.crypto import SigningKey
from atp.repo import build_repo
from schemas import RecordCreate, RepoJob, RepoMarker, encode_entry
from streams import Keys
from tests._hostile import (
    GET_REPO,
    LIST_REPOS,
    HostileServer,
    bomb,
    car_bomb,
    did_document,
    drip,
    flood,
    json_answer,
    raw_answer,
    redirect_loop,
    zeros_bomb,
)
from tests._support import wait_until, xfields, xrange
from tests.workers._pipeline import read_all

pytestmark = pytest.mark.anyio

MIB = 1 << 20
CAP = 64 * MIB  # BACKFILLER_MAX_REPO_BYTES of the worker under attack


def _did(tag: str) -> str:
    return "did:plc:" + (tag + "a" * 24)[:24]


def _proc_stats(pid: int) -> tuple[int, float]:
    """(peak RSS in bytes, CPU seconds) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm, (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


@pytest.fixture
def backfiller_process(redis_url: str, prefix: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(plc_url: str, *, allow_private: bool) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILLER_", "STREAMFILL_"))}
        env |= {
            "REDIS_URL": redis_url,
            "STREAMFILL_PREFIX": prefix,
            "PLC_URL": plc_url,
            "STREAMFILL_ALLOW_PRIVATE_HOSTS": "true" if allow_private else "false",
            "BACKFILLER_CONSUMER": "hostile-1",
            "BACKFILLER_MAX_REPO_BYTES": str(CAP),
            "BACKFILLER_HTTP_TIMEOUT_SECS": "2",
            "BACKFILLER_MAX_RETRIES": "1",
            "BACKFILLER_PDS_RPS": "1000",
        }
        cmd = [sys.executable, "-m", "workers.cli", "backfiller"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def _enqueue(redis: aioredis.Redis, keys: Keys, *dids: str) -> None:
    for did in dids:
        job = encode_entry("repo_backfill", RepoJob(did=did, host="evil"))
        await redis.xadd(keys.stream("repo_backfill"), xfields(job))


async def _dead(
    redis: aioredis.Redis, keys: Keys, stream: str = "repo_backfill"
) -> dict[str, dict[str, str]]:
    """DLQ entries of `stream` by DID."""
    out = {}
    for _, fields in await xrange(redis, keys.stream(f"{stream}:dlq")):
        f = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        did = f.get("did") or f["repo"].split('"did":"', 1)[1].split('"', 1)[0]
        out[did] = f
    return out


@pytest.mark.leaves_pending("jobs parked behind a 429 back-off stay pending")
async def test_hostile_peers_are_dead_lettered_and_the_worker_stays_small(
    redis_client: aioredis.Redis,
    redis_url: str,
    prefix: str,
    backfiller_process: Callable[..., subprocess.Popen[bytes]],
) -> None:
    keys = Keys(prefix)
    key = SigningKey.generate("secp256k1", seed=b"hostile")
    good, long_key = _did("good"), _did("longkey")
    bombs2, bomb1, dripping, looping = _did("bombtwo"), _did("bombone"), _did("drip"), _did("loop")
    doc_flood, throttled = _did("docflood"), _did("throttled")
    async with HostileServer() as evil, HostileServer() as strict:
        for did in (good, long_key, bombs2, bomb1, dripping, looping):
            evil.on(f"/{did}", json_answer(did_document(did, evil.base, key)))
        evil.on(f"/{throttled}", json_answer(did_document(throttled, strict.base, key)))
        evil.on(f"/{doc_flood}", flood(b" " * 65536, total=200 * MIB))
        records = [("app.bsky.feed.post/3kaaaaaaaaaa2", {"$type": "app.bsky.feed.post", "text": "ok"})]
        evil.on(GET_REPO, raw_answer(_car(good, key, records), {}), did=good)
        too_long = [*records, ("app.bsky.feed.post/" + "k" * 600, {"text": "a 600-character key"})]
        evil.on(GET_REPO, raw_answer(_car(long_key, key, too_long), {}), did=long_key)
        evil.on(GET_REPO, bomb(zeros_bomb(2), layers=2), did=bombs2)  # ~10 KB hiding 4 GiB
        evil.on(GET_REPO, bomb(car_bomb(), layers=1), did=bomb1)  # 4.5 MB: a 4 GiB CAR
        evil.on(GET_REPO, drip(_car(dripping, key, records), interval_s=1.0), did=dripping)
        evil.on(GET_REPO, redirect_loop(), did=looping)
        day = {"error": "RateLimitExceeded", "message": "come back tomorrow"}
        strict.on(GET_REPO, json_answer(day, status=429, headers={"Retry-After": "86400"}))

        proc = backfiller_process(evil.base, allow_private=True)
        await _enqueue(redis_client, keys, good)
        await wait_until(lambda: _acked(redis_client, keys, 1), timeout=60, what="the good repo backfilled")
        baseline_rss, baseline_cpu = _proc_stats(proc.pid)

        await _enqueue(redis_client, keys, long_key, bombs2, bomb1, dripping, looping, doc_flood, throttled)
        await wait_until(lambda: _acked(redis_client, keys, 7), timeout=60, what="every bad job settled")
        rss, cpu = _proc_stats(proc.pid)
        status = await anyio.to_thread.run_sync(lambda: _status(redis_url, keys.prefix))
        assert proc.poll() is None  # the worker kept running through all of it
        proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(lambda: proc.wait(30)) == 0

    dead = await _dead(redis_client, keys)
    assert set(dead) == {bombs2, bomb1, dripping, looping}, dead
    assert dead[bombs2]["reason"] == "ResponseRejected" and "gzip, gzip" in dead[bombs2]["error"]
    assert dead[bomb1]["reason"] == "RepoTooLarge" and dead[bomb1]["attempts"] == "1"
    assert evil.hits[f"{GET_REPO}?did={bomb1}"] == 1  # dead-lettered at first sight, fetched once
    assert dead[dripping]["reason"] == "max deliveries (1) reached" and "Timeout" in dead[dripping]["error"]
    assert dead[looping]["reason"] == "ResponseRejected" and "TooManyRedirects" in dead[looping]["error"]
    outcomes = {f[b"did"].decode(): f for _, f in await xrange(redis_client, keys.outcomes("repo_backfill"))}
    assert (
        outcomes[doc_flood][b"outcome"] == b"did_unresolvable"
        and b"BodyTooLarge" in outcomes[doc_flood][b"detail"]
    )
    # The 429's Retry-After of a day is capped at BACKFILLER_MAX_RETRY_AFTER_SECS (300), and shown.
    assert f"backoff {strict.base.removeprefix('http://')}" in status, status
    assert "consumer hostile-1" in status
    left = float(status.split(f"backoff {strict.base.removeprefix('http://')}  ")[1].split("m left")[0])
    assert 4.0 < left <= 5.0, status  # minutes
    # The 600-character key is not written; the rest of its repo is, and the key is in the DLQ.
    events = await read_all(redis_client, keys.stream("firehose_backfill"))
    written = {(e.did, e.rkey) for e in events if isinstance(e, RecordCreate)}
    assert written == {(good, "3kaaaaaaaaaa2"), (long_key, "3kaaaaaaaaaa2")}
    assert {e.did: e.records for e in events if isinstance(e, RepoMarker)} == {good: 1, long_key: 1}
    bad_keys = await _dead(redis_client, keys, "firehose_backfill")
    assert bad_keys[long_key]["reason"] == "invalid-record-key" and "k" * 600 in bad_keys[long_key]["event"]

    # A 4 GiB content-coding bomb, a 4 GiB CAR and a 200 MB document: the process never held a
    # cap's worth (64 MiB) more than after one small repo, and spent seconds, not minutes, of CPU.
    grown = rss - baseline_rss
    assert grown < CAP, f"peak RSS grew {grown / MIB:.0f} MiB (from {baseline_rss / MIB:.0f} MiB)"
    assert rss < 192 * MIB, f"peak RSS {rss / MIB:.0f} MiB"  # ~75 MiB after one small repo
    assert cpu - baseline_cpu < 10, f"{cpu - baseline_cpu:.1f} s of CPU for the hostile jobs"


async def test_policy_on_refuses_pds_endpoints_on_private_addresses(
    redis_client: aioredis.Redis, prefix: str, backfiller_process: Callable[..., subprocess.Popen[bytes]]
) -> None:
    keys = Keys(prefix)
    key = SigningKey.generate("secp256k1", seed=b"ssrf")
    inside, metadata = _did("inside"), _did("metadata")
    async with HostileServer() as plc, HostileServer() as pds:
        plc.on(f"/{inside}", json_answer(did_document(inside, pds.base, key)))
        plc.on(f"/{metadata}", json_answer(did_document(metadata, "http://169.254.169.254", key)))
        pds.on(GET_REPO, raw_answer(_car(inside, key, []), {}))
        proc = backfiller_process(plc.base, allow_private=False)
        await _enqueue(redis_client, keys, inside, metadata)
        await wait_until(lambda: _acked(redis_client, keys, 2), timeout=60, what="both jobs settled")
        proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(lambda: proc.wait(30)) == 0
    dead = await _dead(redis_client, keys)
    assert {d: f["reason"] for d, f in dead.items()} == {inside: "ForbiddenHost", metadata: "ForbiddenHost"}
    assert pds.hits[GET_REPO] == 0  # the configured PLC directory was asked; the PDS never was


def _car(did: str, key: SigningKey, records: Sequence[tuple[str, object]]) -> bytes:
    return build_repo(did, records, rev="3kaaaaaaaaaa2", signing_key=key).car


async def _acked(redis: aioredis.Redis, keys: Keys, n: int) -> bool:
    """Whether `n` jobs were acked (done or dead-lettered) or are parked behind a 429 back-off."""
    groups = await redis.xinfo_groups(keys.stream("repo_backfill"))
    if not groups:
        return False
    read, pending = int(groups[0]["entries-read"] or 0), int(groups[0]["pending"])
    parked = await redis.exists(keys.backoff(keys.stream("repo_backfill"), "hostile-1"))
    return read - pending + (pending if parked else 0) >= n


def _status(redis_url: str, prefix: str) -> str:
    cmd = [sys.executable, "-m", "workers.cli", "status", "--redis-url", redis_url, "--prefix", prefix]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


async def test_hostile_relay_floods_listrepos(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """`streamfill ingester` paging a relay that answers every listRepos with 200 MB."""
    async with HostileServer() as relay:
        relay.on(LIST_REPOS, flood(b'{"repos": [' + b" " * 65536, total=200 * MIB))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTER_", "STREAMFILL_"))}
        env |= {
            "REDIS_URL": redis_url,
            "STREAMFILL_PREFIX": prefix,
            "INGESTER_MODE": "backfill",
            "INGESTER_RELAY_HOSTS": relay.base,  # configured, so trusted: the policy stays on
            "INGESTER_MAX_CONSECUTIVE_ERRORS": "1000",
        }
        cmd = [sys.executable, "-m", "workers.cli", "ingester"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_until(lambda: relay.hits[LIST_REPOS] >= 1, timeout=60, what="the first listRepos")
            baseline_rss, baseline_cpu = _proc_stats(proc.pid)
            await wait_until(lambda: relay.hits[LIST_REPOS] >= 5, timeout=60, what="four more floods")
            rss, cpu = _proc_stats(proc.pid)
            assert proc.poll() is None  # refused, backed off, asked again: still running
        finally:
            proc.kill()  # shutdown is not what this test is about
            await anyio.to_thread.run_sync(lambda: proc.wait(30))
    cursor = Keys(prefix).cursor("repo_backfill", relay.base.removeprefix("http://"))
    assert not await redis_client.exists(cursor)  # nothing was taken from those answers
    # An idle ingester is ~75 MiB; one of those bodies read whole would be 200 MB more.
    grown = rss - baseline_rss
    assert rss < 128 * MIB and grown < 32 * MIB, f"peak RSS {rss / MIB:.0f} MiB, grew {grown / MIB:.0f} MiB"
    assert cpu - baseline_cpu < 10
