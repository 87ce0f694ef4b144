"""`campaign apply`: enqueue a plan stage by stage at its rate, then halt at each stage's gate.

Each batch of jobs, the DIDs they are for, and the campaign's cursor past them are written by
one script call (atomic): an `apply` killed at any moment and run again continues at the
cursor and enqueues no repo twice (a DID already enqueued is also never enqueued again). One
`apply` per campaign runs at a time (a lock with a TTL, taken over from a dead process on the
same host).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import redis.asyncio as aioredis

from schemas import RepoJob, encode_entry
from streams import Throttle
from workers.campaign import artifacts, gate
from workers.campaign.config import REPO_STREAM
from workers.campaign.state import (
    AWAITING,
    COMPLETED,
    PAUSED,
    PLANNED,
    RUNNING,
    Campaign,
    CampaignError,
    CampaignStore,
)

# Jobs enqueued by one script call at most (one second's worth at the rate, up to this).
MAX_BATCH = 1000
LOCK_TTL_S = 30
POLL_S = 0.5

_ENQUEUE = """
local h = KEYS[1]
if redis.call('HGET', h, 'state') ~= 'running' then return redis.error_reply('state') end
if redis.call('HGET', h, 'cursor') ~= ARGV[1] then return redis.error_reply('cursor') end
local added = 0
for i = 5, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    local id = redis.call('XADD', KEYS[3], '*', ARGV[4], ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i], id)
    added = added + 1
  end
end
redis.call('HSET', h, 'cursor', ARGV[2], 'batches', ARGV[3])
return added
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def register_undo(conn: Any, name: str) -> None:
    """Make the indexer keep undo rows for the campaign's snapshots (migration 0003)."""
    try:
        await conn.execute("INSERT INTO campaign_undo_on (campaign) VALUES ($1) ON CONFLICT DO NOTHING", name)
    except asyncpg.UndefinedTableError:
        raise CampaignError(
            f"campaign {name!r} keeps undo rows, but PostgreSQL has no campaign_undo_on table: "
            "run `streamfill indexer --migrate` first"
        ) from None


class Applier:
    """Runs one campaign until it needs an operator (a gate, a pause) or ends."""

    def __init__(
        self,
        store: CampaignStore,
        conn: Any,
        name: str,
        *,
        out: Path | None = None,
        throttle: Throttle | None = None,
        follow: bool = False,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.store = store
        self.redis: aioredis.Redis = store.redis
        self.keys = store.keys
        self.conn = conn
        self.name = name
        self._out = out
        self.throttle = throttle
        self.follow = follow
        self.echo = echo
        self._enqueue = self.redis.register_script(_ENQUEUE)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._token = f"{socket.gethostname()}:{os.getpid()}"
        self._budget = 1.0
        self._refilled = time.monotonic()
        self._ids: dict[int, list[str]] = {}

    def out(self, campaign: Campaign) -> Path:
        return self._out or Path(campaign.out_dir)

    async def run(self) -> int:
        await self.store.get(self.name)  # exists
        await self._lock()
        try:
            campaign = await self.store.get(self.name)
            if campaign.state == PLANNED:
                await self._start(campaign)
            return await self._loop()
        finally:
            await self._release(keys=[self.keys.campaign_lock(self.name)], args=[self._token])

    async def _start(self, campaign: Campaign) -> None:
        """planned -> running, with the pipeline's figures before the campaign (soak's baseline)."""
        if campaign.undo:
            await register_undo(self.conn, self.name)
        baseline = await gate.health(self.redis, self.keys)
        marks = await gate.stream_marks(self.redis, self.keys)
        await self.store.transition(
            self.name,
            {PLANNED},
            "apply",
            state=RUNNING,
            started_at=f"{time.time():.3f}",
            baseline=baseline,
            start_ids=marks,
        )
        self.echo(f"campaign {self.name}: started; {campaign.total} repos in {len(campaign.stages)} stages")

    async def _lock(self) -> None:
        key = self.keys.campaign_lock(self.name)
        if await self.redis.set(key, self._token, nx=True, ex=LOCK_TTL_S):
            return
        raw: Any = await self.redis.get(key)
        holder = (raw or b"").decode()
        host, _, pid = holder.rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            await self.redis.set(key, self._token, ex=LOCK_TTL_S)  # its holder died (SIGKILL)
            return
        raise CampaignError(f"campaign {self.name!r}: an apply already runs ({holder})")

    async def _loop(self) -> int:
        while True:
            await self._renew(keys=[self.keys.campaign_lock(self.name)], args=[self._token, LOCK_TTL_S])
            campaign = await self.store.get(self.name)
            if campaign.state != RUNNING:
                if self.follow and campaign.state in (AWAITING, PAUSED):
                    await anyio.sleep(POLL_S)
                    continue
                self._say_state(campaign)
                artifacts.write_results(self.out(campaign), campaign)
                return 0
            _, end = campaign.stage_range()
            if campaign.cursor < end:
                await self._enqueue_some(campaign, end)
            elif await self._stage_done(campaign):
                await self._close_stage(campaign)
                if not self.follow:
                    return 0
            else:
                await anyio.sleep(POLL_S)

    def _say_state(self, campaign: Campaign) -> None:
        hints = {
            AWAITING: f"awaiting approval: `streamfill campaign approve {self.name}` (or reject), "
            "then apply again",
            PAUSED: f"paused: `streamfill campaign resume {self.name}`, then apply again",
        }
        self.echo(
            f"campaign {self.name} is {campaign.state}"
            + (f": {hints[campaign.state]}" if campaign.state in hints else "")
        )

    async def _enqueue_some(self, campaign: Campaign, end: int) -> None:
        if self.throttle is not None:  # slowed, then paused, while live traffic falls behind
            await self.throttle.wait()
        per_s = campaign.rate_per_min / 60
        now = time.monotonic()
        self._budget = min(self._budget + (now - self._refilled) * per_s, max(1.0, per_s))
        self._refilled = now
        n = min(int(self._budget), end - campaign.cursor, MAX_BATCH)
        if n < 1:
            await anyio.sleep(min(POLL_S * 4, (1 - self._budget) / per_s))
            return
        repos = await self.store.repos(self.name, campaign.cursor, campaign.cursor + n)
        number = campaign.batches + 1
        artifacts.write_batch(self.out(campaign), number, campaign.stage + 1, repos)
        args: list[Any] = [campaign.cursor, campaign.cursor + n, number, "repo"]
        for r in repos:
            job = RepoJob(
                did=r["did"], host=r["host"], rev=r.get("rev"), reason="campaign", campaign=self.name
            )
            args += [r["did"], encode_entry(REPO_STREAM, job)[b"repo"]]
        keys = [
            self.keys.campaign(self.name),
            self.keys.campaign_enqueued(self.name),
            self.keys.stream(REPO_STREAM),
        ]
        try:
            await self._enqueue(keys=keys, args=args)
        except aioredis.ResponseError as exc:
            if str(exc) not in ("state", "cursor"):
                raise
            return  # paused, aborted or moved on meanwhile: the loop reads the state again
        self._budget -= n

    async def _stage_ids(self, campaign: Campaign) -> list[str]:
        """The entry ids of the stage's jobs (all enqueued by now), read once per stage."""
        if campaign.stage not in self._ids:
            first, end = campaign.stage_range()
            dids = [r["did"] for r in await self.store.repos(self.name, first, end)]
            self._ids = {campaign.stage: list((await self.store.job_ids(self.name, dids)).values())}
        return self._ids[campaign.stage]

    async def _stage_done(self, campaign: Campaign) -> bool:
        mark_key = f"{campaign.stage}:"
        if not (campaign.drain_mark or "").startswith(mark_key):
            if not await gate.jobs_settled(self.redis, self.keys, await self._stage_ids(campaign)):
                return False
            mark = mark_key + await gate.drain_mark(self.redis, self.keys)
            await self.redis.hset(self.keys.campaign(self.name), "drain_mark", mark)
            campaign = await self.store.get(self.name)
        assert campaign.drain_mark is not None
        return await gate.drained(self.redis, self.keys, campaign.drain_mark.split(":", 1)[1])

    async def _close_stage(self, campaign: Campaign) -> None:
        """Evaluate the gate; halt for approval, or complete after the last stage."""
        first, end = campaign.stage_range()
        repos = await self.store.repos(self.name, first, end)
        figures = await gate.evaluate(
            self.redis,
            self.keys,
            self.conn,
            self.name,
            campaign.stage + 1,
            repos,
            campaign.start_ids,
            campaign.pass_mark,
        )
        out = self.out(campaign)
        artifacts.record_outcomes(out, campaign.stage + 1, figures.per_repo)
        gates = [*campaign.gates, figures.to_json()]
        # Every gate halts but a passed last one; approving a failed last gate completes the campaign.
        last = campaign.stage == len(campaign.stages) - 1
        state = COMPLETED if last and figures.passed else AWAITING
        await self.store.transition(self.name, {RUNNING}, "gate", state=state, gates=gates)
        artifacts.write_results(out, await self.store.get(self.name))
        for line in figures.lines():
            self.echo(f"campaign {self.name}: {line}")
        self._say_state(await self.store.get(self.name))


def dry_run(campaign: Campaign, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """What `apply` would do from where the campaign stands, without enqueuing anything."""
    per_batch = max(1, min(MAX_BATCH, math.floor(campaign.rate_per_min / 60) or 1))
    stages = []
    for i in range(campaign.stage, len(campaign.stages)):
        first, end = campaign.stage_range(i)
        todo = end - max(first, campaign.cursor)
        stages.append(
            {
                "stage": i + 1,
                "repos": end - first,
                "to_enqueue": max(0, todo),
                "batches": math.ceil(max(0, todo) / per_batch),
                "minutes": round(max(0, todo) / campaign.rate_per_min, 2),
            }
        )
    report = {"name": campaign.name, "state": campaign.state, "dry_run": True, "stages": stages}
    for s in stages:
        echo(
            f"stage {s['stage']}: {s['to_enqueue']}/{s['repos']} repos to enqueue in {s['batches']} batches, "
            f"{s['minutes']:g} min at {campaign.rate_per_min:g}/min, then a gate"
        )
    echo(json.dumps(report))
    return report
