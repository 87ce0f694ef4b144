"""Backfill campaigns (issue #15) against a devnet, real Redis and PostgreSQL: gates halt with the
right figures and continue on approve, the index ends equal to the truth, `--scope stale` finds
exactly the repos whose rows were deleted, a SIGKILLed `apply` re-run enqueues nothing twice."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
import redis.asyncio as aioredis

from atp.tid import tid_from_time
from devnet import Devnet, DevnetConfig, FaultConfig
from schemas import RecordDelete, RepoJob, encode_entry
from streams import Keys
from tests._support import wait_until, xadd, xrange
from tests.workers._campaign import apply_with_pipeline, config, context, plan
from tests.workers._pipeline import read_all
from workers.campaign.actions import ACTIONS, active_campaign_lines, apply_campaign, show_status, status_line
from workers.campaign.apply import Applier, dry_run
from workers.campaign.gate import live_lag_s
from workers.campaign.rollback import rollback
from workers.campaign.soak import SoakOptions, soak
from workers.campaign.state import AWAITING, COMPLETED, PAUSED, RUNNING, CampaignError
from workers.indexer import IndexerHandler
from workers.indexer.collections import ALL_TABLES, live_records_sql
from workers.indexer.config import IndexerConfig
from workers.indexer.db import create_pool
from workers.indexer.migrate import migrate
from workers.indexer.verify import aggregates_match, verify
from workers.indexer.worker import build_consumers

pytestmark = pytest.mark.anyio
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
        yield name
        await conn.execute(f"DROP SCHEMA {name} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def pool(database_url: str, schema: str) -> AsyncIterator[Any]:
    pool = await create_pool(database_url, max_size=4, schema=schema)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        yield pool
    finally:
        await pool.close()


def _records(net: Devnet) -> list[dict[str, Any]]:
    return [line for line in net.truth() if line["type"] == "record"]


async def _exact(pool: Any, net: Devnet) -> None:
    verdict = await verify(pool, _records(net))
    assert (verdict.missing, verdict.extra, verdict.stale) == (0, 0, 0), verdict.to_json()
    assert verdict.aggregates_ok
    assert verdict.indexed == len(_records(net))


async def _act(ctx: Any, action: str, name: str, **extra: Any) -> None:
    import argparse

    assert await ACTIONS[action](ctx, argparse.Namespace(**({"name": name, "force": False} | extra))) == 0


async def test_gates_halt_with_figures_and_continue_on_approve(
    redis_client: aioredis.Redis,
    redis_url: str,
    prefix: str,
    pool: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with Devnet(DevnetConfig(repos=30, pds_hosts=2, seed=151)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "c1", tmp_path, stages="10%,50%,100%")
        doc = json.loads((tmp_path / "plan.json").read_text())
        assert [s["cumulative"] for s in doc["stages"]] == [3, 15, 30]
        # The relay lists most repos; the PDS hosts of its listHosts list those it leaves out.
        hosts = {h["host"]: h["repos"] for h in doc["hosts"]}
        relay = net.relay_url.split("://")[1]
        assert sum(hosts.values()) == 30 and set(hosts) <= {relay, *(u.split("://")[1] for u in net.pds_urls)}
        assert hosts[relay] == 30 - sum(a.relay_omitted for a in net.world.accounts)
        assert (tmp_path / "plan.md").exists() and doc["estimate"]["records"] > 0
        truth_records = Counter(line["did"] for line in _records(net))

        echo: list[str] = []
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "c1", echo) == 0
        campaign = await ctx.store.get("c1")
        assert campaign.state == AWAITING, echo
        [gate] = campaign.gates
        first = [r["did"] for r in doc["repos"][:3]]
        assert (gate["stage"], gate["repos"], gate["done"], gate["failed"], gate["dead_lettered"]) == (
            1,
            3,
            3,
            0,
            0,
        )
        assert gate["records_written"] == sum(truth_records[d] for d in first)
        assert (gate["indexed"], gate["indexed_share"], gate["passed"]) == (3, 1.0, True)
        assert any("fully indexed 3/3 = 100.0%" in line for line in echo), echo
        # Only the first stage was enqueued, every job tagged.
        jobs = await read_all(redis_client, Keys(prefix).stream("repo_backfill"))
        assert [j.did for j in jobs] == first and {j.campaign for j in jobs} == {"c1"}
        batch_rows = [
            json.loads(x)
            for p in sorted((tmp_path / "batches").glob("*.jsonl"))
            for x in p.read_text().splitlines()
        ]
        assert {r["did"]: r["outcome"] for r in batch_rows} == dict.fromkeys(first, "indexed")
        assert "awaiting-approval, stage 1/3" in status_line(campaign)
        assert await active_campaign_lines(redis_client, Keys(prefix)) == [status_line(campaign)]
        capsys.readouterr()
        assert await show_status(ctx, _ns(name=None, json=False)) == 0
        shown = capsys.readouterr().out
        assert (
            "gate 1: 3 repos, 3 done, 0 failed, 0 dead-lettered" in shown
            and "100.0% fully indexed: pass" in shown
        )
        assert f"results: {tmp_path / 'execution_results.json'}" in shown

        # Applying again at a gate does nothing; approving continues to the next gate, then the end.
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "c1", echo) == 0
        assert (await ctx.store.get("c1")).cursor == 3
        await _act(ctx, "approve", "c1")
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "c1", echo) == 0
        campaign = await ctx.store.get("c1")
        assert (campaign.state, campaign.gates[-1]["repos"], campaign.gates[-1]["indexed"]) == (
            AWAITING,
            12,
            12,
        )
        await _act(ctx, "approve", "c1")
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "c1", echo) == 0
        campaign = await ctx.store.get("c1")
        assert campaign.state == COMPLETED and len(campaign.gates) == 3
        results = json.loads((tmp_path / "execution_results.json").read_text())
        assert results["state"] == COMPLETED and results["enqueued"] == 30
        assert await active_campaign_lines(redis_client, Keys(prefix)) == []  # completed: not active
        await _exact(pool, net)
        jobs = await read_all(redis_client, Keys(prefix).stream("repo_backfill"))
        assert sorted(j.did for j in jobs) == sorted(r["did"] for r in doc["repos"])
        audit = [f[b"action"].decode() for _, f in await xrange(redis_client, Keys(prefix).audit())]
        assert audit == [
            "campaign.plan",
            "campaign.apply",
            "campaign.gate",
            "campaign.approve",
            "campaign.gate",
            "campaign.approve",
            "campaign.gate",
        ]


async def test_pause_and_resume_are_states_apply_respects(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, pool: Any, tmp_path: Path
) -> None:
    async with Devnet(DevnetConfig(repos=5, pds_hosts=1, seed=152)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "p", tmp_path, sample=0)
        await ctx.store.transition("p", {"planned"}, "apply", state=RUNNING)
        await _act(ctx, "pause", "p")
        echo: list[str] = []
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "p", echo) == 0
        assert (await ctx.store.get("p")).state == PAUSED and (await ctx.store.get("p")).cursor == 0
        assert "is paused" in echo[-1]
        await _act(ctx, "resume", "p")
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "p", echo) == 0
        assert (await ctx.store.get("p")).state == COMPLETED
        await _exact(pool, net)


async def _delete_repos(pool: Any, dids: list[str]) -> None:
    async with pool.acquire() as conn:
        for table in ALL_TABLES:
            await conn.execute(f"DELETE FROM {table.table} WHERE did = ANY($1)", dids)
        await conn.execute("DELETE FROM actor_sync WHERE did = ANY($1)", dids)
        # The aggregates follow the rows (as a real loss would leave them is beside the point).
        await conn.execute("DELETE FROM post_agg; DELETE FROM profile_agg")
        await conn.execute(
            "INSERT INTO profile_agg (did, posts_count) SELECT did, count(*) FROM post WHERE NOT tombstone "
            "GROUP BY did"
        )


async def test_stale_scope_lists_exactly_the_deleted_repos_and_restores_them(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, pool: Any, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    async with Devnet(DevnetConfig(repos=20, pds_hosts=2, seed=153)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "full", tmp_path / "full", sample=0)
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "full", []) == 0
        await _exact(pool, net)
        with_records = sorted({line["did"] for line in _records(net)})
        lost = random.Random(seed).sample(with_records, 4)
        await _delete_repos(pool, lost)
        async with pool.acquire() as conn:
            left = await conn.fetchval(
                f"SELECT count(*) FROM ({live_records_sql()}) r WHERE did = ANY($1)", lost
            )
        assert left == 0

        await plan(ctx, "heal", tmp_path / "heal", scope="stale", sample=0)
        doc = json.loads((tmp_path / "heal" / "plan.json").read_text())
        assert sorted(r["did"] for r in doc["repos"]) == sorted(lost)
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "heal", []) == 0
        assert (await ctx.store.get("heal")).state == COMPLETED
        verdict = await verify(pool, _records(net))
        assert (verdict.missing, verdict.extra, verdict.stale) == (0, 0, 0), verdict.to_json()
        await plan(ctx, "again", tmp_path / "again", scope="stale", sample=0)
        assert json.loads((tmp_path / "again" / "plan.json").read_text())["repos_total"] == 0


def _apply_process(env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "campaign", "apply", name],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_apply_killed_and_rerun_enqueues_no_repo_twice(
    redis_client: aioredis.Redis,
    redis_url: str,
    database_url: str,
    schema: str,
    prefix: str,
    pool: Any,
    tmp_path: Path,
) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=60, pds_hosts=2, seed=154)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "k", tmp_path, rate="8/s", sample=0)
    sep = "&" if "?" in database_url else "?"
    env = os.environ | {
        "REDIS_URL": redis_url,
        "STREAMFILL_PREFIX": prefix,
        "DATABASE_URL": f"{database_url}{sep}search_path={schema}",
    }

    async def cursor() -> int:
        return int(await redis_client.hget(keys.campaign("k"), "cursor") or 0)

    for _ in range(3):  # killed at random moments while it enqueues (a chaos delay, not a wait)
        target = await cursor() + 1
        proc = _apply_process(env, "k")
        try:
            await wait_until(functools.partial(_past, cursor, target), timeout=30, what="enqueuing")
            await anyio.sleep(rng.uniform(0.0, 1.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    proc = _apply_process(env, "k")  # the last one enqueues the rest, then waits for the pipeline
    try:
        await wait_until(lambda: _past(cursor, 60), timeout=30, what="all enqueued")
    finally:
        proc.send_signal(signal.SIGKILL)
        stderr = proc.communicate()[1]
    jobs = [j for j in await read_all(redis_client, keys.stream("repo_backfill")) if isinstance(j, RepoJob)]
    counts = Counter(j.did for j in jobs)
    assert len(counts) == 60 and max(counts.values()) == 1, (counts.most_common(3), stderr)
    assert await redis_client.hlen(keys.campaign_enqueued("k")) == 60


async def _past(cursor: Any, target: int) -> bool:
    return bool(await cursor() >= target)


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (("plan", "x", "--scope", "everything"), ("--scope", "everything")),
        (("plan", "x", "--scope", "all", "--stages", "10%,5%"), ("--stages", "increase")),
        (("plan", "x", "--scope", "all", "--rate", "fast"), ("--rate", "fast")),
        (("plan", "bad name", "--scope", "all"), ("campaign name",)),
        (("plan", "x", "--scope", "dids=/nonexistent/dids.txt"), ("cannot read",)),
        (("approve", "nosuch"), ("no campaign named 'nosuch'",)),
        (("pause", "nosuch"), ("no campaign named 'nosuch'",)),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    redis_url: str, prefix: str, argv: tuple[str, ...], names: tuple[str, ...]
) -> None:
    env = os.environ | {
        "REDIS_URL": redis_url,
        "STREAMFILL_PREFIX": prefix,
        "DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
    }
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "campaign", *argv],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for name in names:
        assert name in lines[0], lines[0]


async def _campaign_cli(env: dict[str, str], *argv: str) -> tuple[int, str]:
    done = await anyio.run_process(
        [sys.executable, "-m", "workers.cli", "campaign", *argv], cwd=PROJECT, env=env, check=False
    )
    return done.returncode, done.stderr.decode()


async def test_bad_did_file_line_and_wrong_state_are_refused(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, pool: Any, tmp_path: Path
) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_text("did:plc:abcdefghijklmnopqrstuvwx\n# comment\nnot-a-did\n")
    env = os.environ | {"REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix}
    code, stderr = await _campaign_cli(env, "plan", "x", "--scope", f"dids={dids}")
    assert code == 2 and "line 3" in stderr and len(stderr.splitlines()) == 1, stderr
    async with Devnet(DevnetConfig(repos=3, pds_hosts=1, seed=155)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "w", tmp_path, sample=0)
    code, stderr = await _campaign_cli(env, "approve", "w")
    assert code == 2 and "is planned" in stderr and len(stderr.splitlines()) == 1, stderr


async def _dump(pool: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every row of the record tables and actor_sync, keyed, without indexed_at."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    async with pool.acquire() as conn:
        for table, keys in [(t.table, t.keys) for t in ALL_TABLES] + [("actor_sync", ("did",))]:
            for row in await conn.fetch(f"SELECT * FROM {table}"):
                values = {k: v for k, v in dict(row).items() if k != "indexed_at"}
                out[(table, *(row[k] for k in keys))] = values
    return out


async def test_rollback_restores_the_rows_before_the_campaign_except_live_changes(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, pool: Any, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    keys = Keys(prefix)
    async with Devnet(DevnetConfig(repos=12, pds_hosts=2, seed=156)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "base", tmp_path / "base", sample=0)
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "base", []) == 0
        before = await _dump(pool)
        net.step(60)  # the network moves on; nothing follows it live here
        await plan(ctx, "u", tmp_path / "u", sample=0, undo=True)
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "u", []) == 0
        # (Accounts the activity deactivated are not in the plan, and no live event told the
        # index: the index is not compared with the truth here, only with itself before.)
        after_campaign = await _dump(pool)
    changed = [k for k in after_campaign if after_campaign[k] != before.get(k) and k[0] != "actor_sync"]
    assert changed, "the campaign changed nothing: the test proves nothing"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM campaign_undo WHERE campaign = 'base'") == 0

    # A live event changes one of the rows the campaign wrote, after the campaign.
    table, did, *rest = rng.choice(changed)
    tbl = next(t for t in ALL_TABLES if t.table == table)
    collection, rkey = (rest[0], rest[1]) if tbl.generic else (tbl.nsid, rest[0])
    live_rev = tid_from_time(int(time.time() * 1_000_000) + 10**9)
    delete = RecordDelete(seq=1, did=did, rev=live_rev, collection=collection, rkey=rkey)
    await xadd(redis_client, keys.stream("firehose_live"), encode_entry("firehose_live", delete))
    indexer = IndexerConfig(prefix=prefix, streams=("firehose_live",), batch_size=50)
    for consumer in build_consumers(redis_client, indexer, IndexerHandler(pool)):
        await consumer.run_until_idle()
    live_key = (table, did, *rest)

    out = tmp_path / "u"
    async with pool.acquire() as conn:
        assert await rollback(ctx.store, conn, await ctx.store.get("u"), None) == 0
    restored = await _dump(pool)
    assert restored[live_key]["rev"] == live_rev and restored[live_key]["tombstone"]
    assert {k: v for k, v in restored.items() if k != live_key} == {
        k: v for k, v in before.items() if k != live_key
    }
    async with pool.acquire() as conn:
        assert await aggregates_match(conn)
    sql = (out / "rollback.sql").read_text()
    assert f"kept (changed since): at://{did}/{collection}/{rkey}" in sql
    assert (await ctx.store.get("u")).state == "rolled-back"

    # Idempotent: again, nothing changes; audited both times.
    async with pool.acquire() as conn:
        assert await rollback(ctx.store, conn, await ctx.store.get("u"), None) == 0
    assert await _dump(pool) == restored
    audit = [f[b"action"].decode() for _, f in await xrange(redis_client, keys.audit())]
    assert audit.count("campaign.rollback") == 2


async def test_soak_is_go_when_repos_match_and_no_go_when_a_sampled_repo_differs(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, pool: Any, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    options = SoakOptions(duration_s=0.2, interval_s=0.1, sample=8, max_lag_growth_s=30.0)
    async with Devnet(DevnetConfig(repos=8, pds_hosts=2, seed=157)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "s", tmp_path, sample=0)
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "s", []) == 0
        campaign = await ctx.store.get("s")
        assert campaign.baseline["live_lag_s"] is None or campaign.baseline["live_lag_s"] >= 0
        async with pool.acquire() as conn:
            soak_ctx = context(redis_client, conn, ctx.config)
            assert await soak(soak_ctx, campaign, options, tmp_path) == 0
            text = (tmp_path / "soak.md").read_text()
            assert "GO" in text.splitlines()[0] and "8/8 (100.0%)" in text
            # The records of one repo are lost from the index: the soak must see it.
            did = random.Random(seed).choice(sorted({line["did"] for line in _records(net)}))
            for table in ALL_TABLES:
                await conn.execute(f"DELETE FROM {table.table} WHERE did = $1", did)
            before = await redis_client.xlen(Keys(prefix).audit())
            assert await soak(soak_ctx, campaign, options, tmp_path) == 1
        text = (tmp_path / "soak.md").read_text()
        assert "NO-GO" in text.splitlines()[0] and f"- {did}: " in text, text
        assert await redis_client.xlen(Keys(prefix).audit()) == before  # read-only


async def test_failed_and_dead_lettered_repos_fail_the_gate_until_forced(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, pool: Any, tmp_path: Path
) -> None:
    async with Devnet(DevnetConfig(repos=12, pds_hosts=2, seed=158, faults=FaultConfig(missing=1))) as net:
        missing = next(a.did for a in net.world.accounts if a.missing)
        bad_sig = next(a.did for a in net.world.accounts if a.status == "active" and not a.missing)
        net.faults.bad_sig_dids.add(bad_sig)
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "f", tmp_path, sample=0)
        echo: list[str] = []
        report = dry_run(await ctx.store.get("f"), echo.append)
        assert [(s["stage"], s["to_enqueue"]) for s in report["stages"]] == [(1, 12)]
        assert await redis_client.exists(Keys(prefix).stream("repo_backfill")) == 0  # nothing enqueued
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "f", echo) == 0
    campaign = await ctx.store.get("f")
    [gate] = campaign.gates
    assert (gate["repos"], gate["done"], gate["failed"], gate["dead_lettered"], gate["indexed"]) == (
        12,
        10,
        1,
        1,
        10,
    )
    assert (gate["error_rate"], gate["dead_letter_rate"], gate["passed"]) == (
        round(2 / 12, 4),
        round(1 / 12, 4),
        False,
    )
    # The last gate halts too when it fails, and only a forced approval completes the campaign.
    assert campaign.state == AWAITING
    with pytest.raises(CampaignError, match="did not pass"):
        await _act(ctx, "approve", "f")
    await _act(ctx, "approve", "f", force=True)
    assert (await ctx.store.get("f")).state == COMPLETED
    rows = [
        json.loads(x)
        for p in sorted((tmp_path / "batches").glob("*.jsonl"))
        for x in p.read_text().splitlines()
    ]
    outcomes = {r["did"]: r["outcome"] for r in rows}
    assert outcomes[missing] == "failed:not_found" and outcomes[bad_sig] == "dead-lettered"
    assert sum(o == "indexed" for o in outcomes.values()) == 10


def test_the_demo_dashboard_shows_active_campaigns() -> None:
    from workers.demo.progress import STREAMS, Snapshot, StreamRow, render

    rows = {name: StreamRow(name, 5, 8, 3, 1, 0, 5) for name, _ in STREAMS}
    line = "campaign spring: running, stage 1/3 [####................] 2/10 enqueued"
    snap = Snapshot(0.0, rows, True, 1234, {"repos": 10, "live_records": 5000}, campaigns=(line,))
    assert line in render(snap, None, [], started=0.0, phase="backfill").splitlines()


async def test_reject_of_an_undo_campaign_rolls_it_back(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, pool: Any, tmp_path: Path
) -> None:
    async with Devnet(DevnetConfig(repos=8, pds_hosts=2, seed=159)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "r", tmp_path, sample=0, undo=True, stages="50%,100%")
        assert await apply_with_pipeline(ctx, redis_client, redis_url, pool, net, "r", []) == 0
    assert (await ctx.store.get("r")).state == AWAITING
    assert await _dump(pool)  # the first stage is indexed
    async with pool.acquire() as conn:
        assert await ACTIONS["reject"](context(redis_client, conn, ctx.config), _ns(name="r")) == 0
        assert await aggregates_match(conn)
    assert (await ctx.store.get("r")).state == "rolled-back"
    assert await _dump(pool) == {}  # the index was empty before the campaign: it is again
    assert (tmp_path / "rollback.sql").exists()


def _ns(**values: Any) -> Any:
    import argparse

    return argparse.Namespace(**values)


async def test_live_lag_is_the_age_of_the_oldest_unacked_live_entry(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    live = keys.stream("firehose_live")
    assert await live_lag_s(redis_client, keys) is None  # no group: nothing to say
    seconds, _ = await redis_client.time()
    old = (int(seconds) - 120) * 1000
    await redis_client.xadd(live, {"event": "{}"}, id=f"{old}-0")
    await redis_client.xadd(live, {"event": "{}"}, id=f"{old + 60_000}-0")
    await redis_client.xgroup_create(live, "firehose_group", id="0")
    lag = await live_lag_s(redis_client, keys)
    assert lag is not None and 119 <= lag <= 125  # unread
    await redis_client.xreadgroup("firehose_group", "c", {live: ">"}, count=1)
    lag = await live_lag_s(redis_client, keys)
    assert lag is not None and 119 <= lag <= 125  # read, pending
    [(entry_id, _)] = await xrange(redis_client, live, count=1)
    await redis_client.xack(live, "firehose_group", entry_id)
    lag = await live_lag_s(redis_client, keys)
    assert lag is not None and 59 <= lag <= 65  # the next one, unread
    await redis_client.xreadgroup("firehose_group", "c", {live: ">"})
    await redis_client.xack(live, "firehose_group", f"{old + 60_000}-0")
    assert await live_lag_s(redis_client, keys) == 0.0


async def test_a_second_apply_is_refused_while_one_runs(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, pool: Any, tmp_path: Path
) -> None:
    async with Devnet(DevnetConfig(repos=3, pds_hosts=1, seed=160)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "two", tmp_path, sample=0)
    await redis_client.set(Keys(prefix).campaign_lock("two"), "elsewhere:1", ex=30)
    with pytest.raises(CampaignError, match=r"an apply already runs \(elsewhere:1\)"):
        await Applier(ctx.store, pool, "two").run()
    assert (await ctx.store.get("two")).state == "planned"  # nothing started


async def test_hosts_and_dids_scopes_list_what_they_name(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, pool: Any, tmp_path: Path
) -> None:
    async with Devnet(DevnetConfig(repos=10, pds_hosts=2, seed=161)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        pds0 = net.pds_urls[0]
        await plan(ctx, "h", tmp_path / "h", scope=f"hosts={pds0}", sample=1)
        doc = json.loads((tmp_path / "h" / "plan.json").read_text())
        on_pds0 = {a.did for a in net.world.accounts if a.pds == 0 and a.active}
        assert {r["did"] for r in doc["repos"]} == on_pds0
        assert doc["hosts"] == [{"host": pds0.split("://")[1], "repos": len(on_pds0), "share": 1.0}]
        assert doc["estimate"]["sample"][0]["pds"] == pds0.split("://")[1]
        chosen = sorted(on_pds0)[:2]
        (tmp_path / "dids.txt").write_text("# two of them\n" + "\n".join(chosen + chosen[:1]) + "\n")
        await plan(ctx, "d", tmp_path / "d", scope=f"dids={tmp_path / 'dids.txt'}", sample=0)
    doc = json.loads((tmp_path / "d" / "plan.json").read_text())
    assert sorted(r["did"] for r in doc["repos"]) == chosen  # each DID once


async def test_apply_pauses_while_live_traffic_lags_and_goes_on_when_it_catches_up(
    redis_client: aioredis.Redis, redis_url: str, prefix: str, pool: Any, tmp_path: Path
) -> None:
    import argparse

    async with Devnet(DevnetConfig(repos=4, pds_hosts=1, seed=162)) as net:
        ctx = context(redis_client, pool, config(redis_url, prefix, net))
        await plan(ctx, "slow", tmp_path, sample=0)
    keys = Keys(prefix)
    live = keys.stream("firehose_live")
    seconds, _ = await redis_client.time()
    stale = f"{(int(seconds) - 30) * 1000}-0"  # a live entry 30 s old that no indexer has acked
    await redis_client.xadd(live, {"event": "{}"}, id=stale)
    await redis_client.xgroup_create(live, "firehose_group", id="0")
    args = argparse.Namespace(name="slow", max_live_lag=5.0, out=None, follow=False, dry_run=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(apply_campaign, ctx, args)
        await wait_until(lambda: redis_client.exists(keys.throttle("campaign-slow")), what="paused")
        assert (await ctx.store.get("slow")).cursor == 0  # nothing enqueued while live lags
        await redis_client.xreadgroup("firehose_group", "indexer", {live: ">"})
        await redis_client.xack(live, "firehose_group", stale)  # live caught up

        async def enqueued() -> bool:
            return (await ctx.store.get("slow")).cursor > 0

        await wait_until(enqueued, what="enqueuing after live caught up")
        tg.cancel_scope.cancel()
