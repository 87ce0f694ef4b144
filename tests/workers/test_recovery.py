"""Gap recovery against real Redis and devnet's relay: `streamfill resync`, `firehose replay`, `audit`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from atp.frames import AccountFrame, CommitFrame, IdentityFrame, decode_frame
from devnet import Devnet, DevnetConfig
from schemas import Account, Identity, RecordCreate, RecordDelete, RecordUpdate, decode_entry
from streams import Keys
from tests._support import xadd, xrange
from tests.workers._pipeline import read_all
from workers.cli import main

pytestmark = pytest.mark.anyio


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str) -> None:
    env = {"REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix, "STREAMFILL_OPERATOR": "carol"}
    env |= {"STREAMFILL_ALLOW_PRIVATE_HOSTS": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)


async def _cli(*argv: str) -> int:
    return await anyio.to_thread.run_sync(main, list(argv))


async def _actions(redis: aioredis.Redis, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await xrange(redis, Keys(prefix).audit())
    return [(f[b"action"].decode(), json.loads(f[b"args"])) for _, f in rows]


def _one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err


async def test_resync_enqueues_one_job_per_did_and_is_audited(
    redis_client: aioredis.Redis, prefix: str, cli_env: None, tmp_path: Path
) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_text("# accounts the gap hit\ndid:plc:aaaa\n\ndid:web:example.com  # moved\ndid:plc:aaaa\n")
    assert await _cli("resync", "--did", "did:plc:bbbb", "--dids-file", str(dids), "--reason", "gap 42") == 0
    jobs = await read_all(redis_client, Keys(prefix).stream("repo_backfill"))
    assert [(j.did, j.reason) for j in jobs] == [
        ("did:plc:bbbb", "resync"),
        ("did:plc:aaaa", "resync"),
        ("did:web:example.com", "resync"),
    ]
    [(action, args)] = await _actions(redis_client, prefix)
    assert action == "resync" and args["count"] == 3 and args["reason"] == "gap 42"


async def test_resync_goes_to_the_did_partition(
    redis_client: aioredis.Redis, prefix: str, cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams import partition_index

    monkeypatch.setenv("STREAMFILL_PARTITIONS", "4")
    dids = [f"did:plc:{n:024d}" for n in range(12)]
    argv = [a for d in dids for a in ("--did", d)]
    assert await _cli("resync", *argv, "--reason", "r") == 0
    keys = Keys(prefix)
    for did in dids:
        part = keys.partition("repo_backfill", partition_index(did, 4), 4)
        rows = await xrange(redis_client, part)
        assert any(did.encode() in b"".join(f.values()) for _, f in rows), did


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--did", "did:plc:ok", "--did", "not-a-did"], "'not-a-did' is not a DID"),
        (["--did", "did:"], "is not a DID"),
        ([], "give --did DID"),
        (["--dids-file", "/nonexistent/dids"], "--dids-file /nonexistent/dids"),
    ],
)
async def test_resync_bad_input_is_one_line_and_enqueues_nothing(
    redis_client: aioredis.Redis,
    prefix: str,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    assert await _cli("resync", *argv, "--reason", "r") == 2
    _one_line(capsys, needle)
    assert await redis_client.xlen(Keys(prefix).stream("repo_backfill")) == 0
    assert await _actions(redis_client, prefix) == []


def _expected(net: Devnet, first: int, last: int) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for seq, raw in net.world.firehose.after(first - 1, limit=100_000):
        frame = decode_frame(raw)
        if seq > last:
            break
        if isinstance(frame, CommitFrame):
            out += [(seq, frame.repo, op.action, op.path) for op in frame.ops]
        elif isinstance(frame, IdentityFrame):
            out.append((seq, frame.did, "identity", ""))
        elif isinstance(frame, AccountFrame):
            out.append((seq, frame.did, "account", ""))
    return out


def _got(e: Any) -> tuple[Any, ...]:
    if isinstance(e, RecordCreate | RecordUpdate | RecordDelete):
        kind = {RecordCreate: "create", RecordUpdate: "update", RecordDelete: "delete"}[type(e)]
        return (e.seq, e.did, kind, f"{e.collection}/{e.rkey}")
    assert isinstance(e, Identity | Account)
    return (e.seq, e.did, "identity" if isinstance(e, Identity) else "account", "")


@pytest.mark.parametrize("partitions", [1, 3])
async def test_firehose_replay_writes_exactly_the_window(
    redis_client: aioredis.Redis, prefix: str, cli_env: None, monkeypatch: pytest.MonkeyPatch, partitions: int
) -> None:
    monkeypatch.setenv("STREAMFILL_PARTITIONS", str(partitions))
    async with Devnet(DevnetConfig(repos=12, seed=7)) as net:
        monkeypatch.setenv("PLC_URL", net.plc_url)
        net.step(80)
        argv = ["--relay", net.relay_url, "--from-seq", "20", "--to-seq", "55", "--rate", "60"]
        started = time.monotonic()
        assert await _cli("firehose", "replay", *argv, "--reason", "outage 3") == 0
        elapsed = time.monotonic() - started
        expected = _expected(net, 20, 55)
    keys = Keys(prefix)
    got = []
    for index in range(partitions):
        rows = await xrange(redis_client, keys.partition("firehose_live", index, partitions))
        got += [_got(decode_entry(keys.stream("firehose_live"), fields)) for _, fields in rows]
    if partitions == 1:
        assert got == expected  # in relay order
    else:
        assert sorted(got) == sorted(expected) and len({e[1] for e in got}) > 1
    assert len(expected) > 20
    assert elapsed >= 35 / 60  # --rate 60: 36 frames take at least 35/60 s
    [(action, args)] = await _actions(redis_client, prefix)
    assert action == "firehose.replay" and (args["from_seq"], args["to_seq"], args["frames"]) == (20, 55, 36)
    # The ingester's cursor for the relay is not the replay's business.
    assert not [k async for k in redis_client.scan_iter(match=f"{prefix}:firehose_live:cursor:*")]


async def test_firehose_replay_refuses_a_window_the_relay_no_longer_serves(
    redis_client: aioredis.Redis, prefix: str, cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    async with Devnet(DevnetConfig(repos=12, seed=7, event_log_size=30)) as net:
        monkeypatch.setenv("PLC_URL", net.plc_url)
        net.step(80)  # the relay keeps seq 51..80
        base = ["firehose", "replay", "--relay", net.relay_url]
        assert await _cli(*base, "--from-seq", "10", "--to-seq", "60") == 2
        _one_line(capsys, "no longer serves seq 10", "OutdatedCursor")
        assert await _cli(*base, "--from-seq", "60", "--to-seq", "10") == 2
        _one_line(capsys, "not a window")
    assert await redis_client.xlen(Keys(prefix).stream("firehose_live")) == 0
    assert await _actions(redis_client, prefix) == []


async def test_audit_reads_filters_exports_and_trims_only_old_entries(
    redis_client: aioredis.Redis, prefix: str, cli_env: None, tmp_path: Path, capsys: Any
) -> None:
    keys = Keys(prefix)
    seconds, _ = await redis_client.time()
    now_ms = int(seconds) * 1000
    day = 86_400_000
    for age_days, action in ((3, "groups.reset"), (1.5, "dlq.replay"), (0.9, "config.set"), (0, "resync")):
        fields = {"action": action, "operator": "dave", "args": json.dumps({"age": age_days}), "at": "0"}
        await xadd(redis_client, keys.audit(), fields, id=f"{now_ms - int(age_days * day)}-0")
    assert await _cli("audit", "--json", "--audit-retention-days", "1") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["action"] for e in lines] == ["config.set", "resync"]  # older than a day: trimmed
    assert await redis_client.xlen(keys.audit()) == 2
    assert await _cli("audit", "--json", "--action", "resync") == 0
    assert [json.loads(x)["action"] for x in capsys.readouterr().out.splitlines()] == ["resync"]
    assert await _cli("audit", "--json", "--since", "1h") == 0
    assert [json.loads(x)["action"] for x in capsys.readouterr().out.splitlines()] == ["resync"]
    out = tmp_path / "audit.jsonl"
    assert await _cli("audit", "export", str(out)) == 0
    exported = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(e["action"], e["operator"], e["args"]) for e in exported] == [
        ("config.set", "dave", {"age": 0.9}),
        ("resync", "dave", {"age": 0}),
    ]
    assert await _cli("audit", "--since", "yesterday") == 2
    _one_line(capsys, "not a duration")


async def test_indexer_migrate_is_audited(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, database_url: str
) -> None:
    from workers.indexer.cli import run_migrate
    from workers.indexer.config import IndexerConfig

    assert await run_migrate(database_url, IndexerConfig(redis_url=redis_url, prefix=prefix)) == 0
    [(action, args)] = await _actions(redis_client, prefix)
    assert action == "indexer.migrate" and isinstance(args["applied"], list)
