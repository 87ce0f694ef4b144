"""The operator CLI against a real server: status, reset, prune, trim, dlq, audit, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis.asyncio as aioredis

from streams import Keys
from tests._support import xadd, xrange, xreadgroup

pytestmark = pytest.mark.anyio


def cli(redis_url: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix, "STREAMFILL_OPERATOR": "alice"}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.leaves_pending("status must show pending entries")
async def test_status_reset_trim_and_audit(redis_client: aioredis.Redis, redis_url: str, prefix: str) -> None:
    keys = Keys(prefix)
    stream = keys.stream("repo_backfill")
    for i in range(5):
        await redis_client.xadd(stream, {"repo": str(i)})
    await redis_client.xgroup_create(stream, "repo_backfill_group", id="0")
    await redis_client.xreadgroup("repo_backfill_group", "b1", {stream: ">"}, count=2)

    out = cli(redis_url, prefix, "status", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    [info] = doc["streams"]
    assert info["stream"] == stream and info["length"] == 5
    [group] = info["groups"]
    assert (group["name"], group["lag"], group["pending"]) == ("repo_backfill_group", 3, 2)
    assert group["lag_s"] >= 0.0  # the age of the oldest pending entry (tests/streams/test_lag.py)
    assert group["consumers"][0]["name"] == "b1" and group["consumers"][0]["pending"] == 2

    text = cli(redis_url, prefix, "status")
    assert "repo_backfill_group" in text.stdout and "lag=3 (" in text.stdout and " behind)" in text.stdout

    assert cli(redis_url, prefix, "trim", "repo_backfill").returncode == 0
    assert await redis_client.xlen(stream) == 5  # nothing acked yet: nothing trimmed

    out = cli(redis_url, prefix, "groups", "reset", "repo_backfill", "repo_backfill_group", "--to", "$")
    assert out.returncode == 0, out.stderr
    out = cli(redis_url, prefix, "groups", "reset", "repo_backfill", "nogroup", "--to", "0")
    assert out.returncode == 2 and "no group 'nogroup'" in out.stderr and "Traceback" not in out.stderr
    out = cli(redis_url, prefix, "trim", "nostream")
    assert out.returncode == 2 and "no such stream" in out.stderr

    audit = await xrange(redis_client, keys.audit())
    actions = [(f[b"action"], f[b"operator"]) for _, f in audit]
    assert (b"groups.reset", b"alice") in actions and (b"trim", b"alice") in actions

    # Flags win over REDIS_URL / STREAMFILL_PREFIX.
    flags = ["--redis-url", redis_url, "--prefix", prefix]
    out = cli("redis://127.0.0.1:1/0", "other", "status", "--json", *flags)
    assert out.returncode == 0, out.stderr
    assert [i["stream"] for i in json.loads(out.stdout)["streams"]] == [stream]


async def test_drain_times_out_then_succeeds(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    stream = Keys(prefix).stream("s")
    entry = await redis_client.xadd(stream, {"a": "1"})
    await redis_client.xgroup_create(stream, "g", id="0")
    out = cli(redis_url, prefix, "groups", "drain", "s", "g", "--timeout", "0.2")
    assert out.returncode == 1 and "not drained" in out.stderr
    await redis_client.xreadgroup("g", "c", {stream: ">"})
    await redis_client.xack(stream, "g", entry)
    out = cli(redis_url, prefix, "groups", "drain", "s", "g", "--timeout", "5")
    assert out.returncode == 0 and "drained" in out.stdout


@pytest.mark.leaves_pending("entries pending at the reset are part of the case")
async def test_trim_after_reset_to_0_trims_nothing(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    # Issue #10 §3, as an operator meets it: 10 entries, 1-4 acked, 5-10 pending, reset to 0.
    stream = Keys(prefix).stream("s")
    ids = [await xadd(redis_client, stream, {"n": str(i)}) for i in range(1, 11)]
    await redis_client.xgroup_create(stream, "g", id="0")
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=10)
    await redis_client.xack(stream, "g", *ids[:4])
    assert cli(redis_url, prefix, "groups", "reset", "s", "g", "--to", "0").returncode == 0
    [info] = json.loads(cli(redis_url, prefix, "status", "--json").stdout)["streams"]
    assert (info["groups"][0]["lag"], info["groups"][0]["pending"]) == (10, 6)

    out = cli(redis_url, prefix, "trim", "s")
    assert out.returncode == 0, out.stderr
    assert "trimmed 0 " in out.stdout and "group g has not read it" in out.stdout
    assert await redis_client.xlen(stream) == 10
    reread = await xreadgroup(redis_client, "g", "c", {stream: ">"})
    assert [i for i, _ in reread[0][1]] == ids  # 1-4 are still there to re-read

    await redis_client.xack(stream, "g", *ids[:7])
    out = cli(redis_url, prefix, "trim", "s")
    assert "trimmed 7 " in out.stdout and f"kept everything from {ids[7].decode()}" in out.stdout
    assert "group g has not acknowledged it" in out.stdout


async def test_trim_a_stream_without_groups_says_so(
    redis_client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    stream = Keys(prefix).stream("s")
    await redis_client.xadd(stream, {"n": "1"})
    out = cli(redis_url, prefix, "trim", "s")
    assert out.returncode == 0, out.stderr
    assert "trimmed nothing" in out.stdout and "no consumer group" in out.stdout
    assert await redis_client.xlen(stream) == 1
