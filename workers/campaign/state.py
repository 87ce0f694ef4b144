"""A campaign's state in Redis: one hash per campaign, its planned repos, its enqueued jobs.

State lives in Redis, not in the process that runs `apply`, so that any operator can approve,
pause or abort from anywhere and a restarted `apply` continues where the last one stopped.
Every change of state is one atomic script call (checked against the states it may leave) and
is audited (streams/_admin.py `audit`).

    planned ──apply──> running ──(stage indexed)──> awaiting-approval ──approve──> running ...
                         │  ^                               │
                       pause resume                       reject ──> rejected
                         v  │
                        paused            (last stage indexed) ──> completed
    any state but a final one ──abort──> aborted;  an --undo campaign ──rollback──> rolled-back
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from streams import Keys
from streams.admin import audit
from workers._errors import EdgeError

PLANNED = "planned"
RUNNING = "running"
AWAITING = "awaiting-approval"
PAUSED = "paused"
COMPLETED = "completed"
REJECTED = "rejected"
ABORTED = "aborted"
ROLLED_BACK = "rolled-back"
ACTIVE = frozenset({RUNNING, AWAITING, PAUSED})
FINAL = frozenset({COMPLETED, REJECTED, ABORTED, ROLLED_BACK})

# Field changes only when the state is one of ARGV[1] (comma-separated); returns the old state,
# or an error naming it.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return redis.error_reply('no-such-campaign') end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == state then allowed = true end end
if not allowed then return redis.error_reply('state:' .. state) end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return state
"""


class CampaignError(EdgeError):
    """A campaign that does not exist, or an action its state does not allow (exit status 2)."""


@dataclass(frozen=True)
class Campaign:
    """One campaign as stored: the plan's shape and where the run stands."""

    name: str
    state: str
    scope: str
    stages: list[int]  # cumulative repo counts: stage i covers positions [stages[i-1], stages[i])
    percents: list[float]
    rate_per_min: float
    undo: bool
    out_dir: str
    stage: int = 0
    cursor: int = 0
    batches: int = 0
    pass_mark: float = 0.85
    created_at: float = 0.0
    started_at: float | None = None
    start_ids: dict[str, str] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    drain_mark: str | None = None

    @property
    def total(self) -> int:
        return self.stages[-1] if self.stages else 0

    def stage_range(self, stage: int | None = None) -> tuple[int, int]:
        """Positions [first, end) of a stage's repos in the plan."""
        i = self.stage if stage is None else stage
        return (self.stages[i - 1] if i else 0), self.stages[i]

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> Campaign:
        h = {k.decode(): v.decode() for k, v in raw.items()}
        started = h.get("started_at")
        return cls(
            name=h["name"],
            state=h["state"],
            scope=h["scope"],
            stages=json.loads(h["stages"]),
            percents=json.loads(h["percents"]),
            rate_per_min=float(h["rate_per_min"]),
            undo=h.get("undo") == "1",
            out_dir=h["out_dir"],
            stage=int(h.get("stage", 0)),
            cursor=int(h.get("cursor", 0)),
            batches=int(h.get("batches", 0)),
            pass_mark=float(h.get("pass_mark", 0.85)),
            created_at=float(h.get("created_at", 0)),
            started_at=float(started) if started else None,
            start_ids=json.loads(h.get("start_ids", "{}")),
            baseline=json.loads(h.get("baseline", "{}")),
            gates=json.loads(h.get("gates", "[]")),
            drain_mark=h.get("drain_mark") or None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "scope": self.scope,
            "stage": self.stage,
            "stages": self.stages,
            "percents": self.percents,
            "repos": self.total,
            "enqueued": self.cursor,
            "batches": self.batches,
            "rate_per_min": self.rate_per_min,
            "undo": self.undo,
            "pass_mark": self.pass_mark,
            "out_dir": self.out_dir,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "baseline": self.baseline,
            "gates": self.gates,
        }


class CampaignStore:
    """Reads and changes campaigns under one key prefix."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._transition = redis.register_script(_TRANSITION)

    async def names(self) -> list[str]:
        names: Any = await self.redis.smembers(self.keys.campaigns())
        return sorted(n.decode() for n in names)

    async def find(self, name: str) -> Campaign | None:
        raw: Any = await self.redis.hgetall(self.keys.campaign(name))
        return Campaign.from_hash(raw) if raw else None

    async def get(self, name: str) -> Campaign:
        campaign = await self.find(name)
        if campaign is None:
            raise CampaignError(f"no campaign named {name!r} (see `streamfill campaign status`)")
        return campaign

    async def create(self, fields: dict[str, str], repos: list[str]) -> None:
        """Store a new plan (replacing one that was only planned), audited."""
        name = fields["name"]
        old = await self.find(name)
        if old is not None and old.state != PLANNED:
            raise CampaignError(f"campaign {name!r} is {old.state}: plan a new campaign under another name")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(
                self.keys.campaign(name), self.keys.campaign_repos(name), self.keys.campaign_enqueued(name)
            )
            mapping: Any = {**fields, "state": PLANNED}
            pipe.hset(self.keys.campaign(name), mapping=mapping)
            for i in range(0, len(repos), 10_000):
                pipe.rpush(self.keys.campaign_repos(name), *repos[i : i + 10_000])
            pipe.sadd(self.keys.campaigns(), name)
            await pipe.execute()
        await audit(
            self.redis, self.keys, "campaign.plan", name=name, repos=len(repos), scope=fields["scope"]
        )

    async def transition(
        self, name: str, allowed: frozenset[str] | set[str], action: str, **fields: Any
    ) -> str:
        """Set `fields` (state included) when the campaign is in one of `allowed`; audited.

        Returns the state it left; CampaignError when it does not exist or is in another state.
        """
        args: list[str] = [",".join(sorted(allowed))]
        for key, value in fields.items():
            args += [key, value if isinstance(value, str) else json.dumps(value)]
        args += ["updated_at", f"{time.time():.3f}"]
        try:
            old = await self._transition(keys=[self.keys.campaign(name)], args=args)
        except aioredis.ResponseError as exc:
            message = str(exc)
            if message == "no-such-campaign":
                raise CampaignError(
                    f"no campaign named {name!r} (see `streamfill campaign status`)"
                ) from None
            if message.startswith("state:"):
                state = message.removeprefix("state:")
                raise CampaignError(
                    f"campaign {name!r} is {state}: `{action}` needs it {' or '.join(sorted(allowed))}"
                ) from None
            raise
        await audit(self.redis, self.keys, f"campaign.{action}", name=name, **fields)
        return old.decode() if isinstance(old, bytes) else str(old)

    async def repos(self, name: str, first: int, end: int) -> list[dict[str, Any]]:
        """Planned repos at positions [first, end)."""
        if end <= first:
            return []
        raw: Any = await self.redis.lrange(self.keys.campaign_repos(name), first, end - 1)
        return [json.loads(r) for r in raw]

    async def job_ids(self, name: str, dids: list[str]) -> dict[str, str]:
        """DID -> entry id of the job the campaign enqueued for it (enqueued DIDs only)."""
        if not dids:
            return {}
        ids: Any = await self.redis.hmget(self.keys.campaign_enqueued(name), dids)
        return {d: i.decode() for d, i in zip(dids, ids, strict=True) if i is not None}
