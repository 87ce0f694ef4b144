"""When a stage is done, and its gate figures: read from the streams and from PostgreSQL.

A stage is done when (1) the backfillers have settled every job the campaign enqueued for it
(acked: done, ended in an outcome, or dead-lettered), and then (2) the indexers have read and
acked everything `firehose_backfill` held at that moment (its last id is the stage's drain mark).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from schemas import RepoJob, SchemaError, decode_entry
from streams import Keys, id_key
from workers.campaign.config import FIREHOSE_GROUP, FIREHOSE_STREAM, LIVE_STREAM, REPO_GROUP, REPO_STREAM
from workers.indexer.collections import live_records_sql

_PAGE = 10_000


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _group(redis: aioredis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return None
    for g in groups:
        if _text(g["name"]) == group:
            return {k: _text(v) if isinstance(v, bytes) else v for k, v in g.items()}
    return None


async def _oldest_pending(redis: aioredis.Redis, stream: str, group: str) -> str | None:
    summary = await redis.xpending(stream, group)
    return _text(summary["min"]) if summary["pending"] else None


async def live_lag_s(
    redis: aioredis.Redis, keys: Keys, stream: str = LIVE_STREAM, group: str = FIREHOSE_GROUP
) -> float | None:
    """Age in seconds of the oldest live entry the indexers have not acked (0: caught up; None: no
    such group). From entry ids against Redis' clock, so any process computes the same figure.

    A gate figure; `apply` itself paces on the control plane's throttle (streams/_throttle.py).
    """
    key = keys.stream(stream)
    info = await _group(redis, key, group)
    if info is None:
        return None
    oldest = await _oldest_pending(redis, key, group)
    if oldest is None:
        after = await redis.xrange(key, min="(" + str(info["last-delivered-id"]), count=1)
        if not after:
            return 0.0
        oldest = _text(after[0][0])
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    return max(0, now_ms - id_key(oldest)[0]) / 1000


async def jobs_settled(redis: aioredis.Redis, keys: Keys, ids: list[str]) -> bool:
    """Whether the backfillers' group has read and acked every one of `ids`."""
    if not ids:
        return True
    key = keys.stream(REPO_STREAM)
    info = await _group(redis, key, REPO_GROUP)
    if info is None:
        return False
    ordered = sorted(ids, key=id_key)
    if id_key(ordered[-1]) > id_key(str(info["last-delivered-id"])):
        return False
    wanted = set(ids)
    start = ordered[0]
    while True:
        page = await redis.xpending_range(key, REPO_GROUP, min=start, max=ordered[-1], count=_PAGE)
        if any(_text(p["message_id"]) in wanted for p in page):
            return False
        if len(page) < _PAGE:
            return True
        ms, seq = id_key(_text(page[-1]["message_id"]))
        start = f"{ms}-{seq + 1}"


async def drain_mark(redis: aioredis.Redis, keys: Keys) -> str:
    """The last id of `firehose_backfill` now ("0-0" when it does not exist)."""
    try:
        info = await redis.xinfo_stream(keys.stream(FIREHOSE_STREAM))
    except ResponseError:
        return "0-0"
    return _text(info["last-generated-id"])


async def drained(redis: aioredis.Redis, keys: Keys, mark: str) -> bool:
    """Whether the indexers have read and acked every `firehose_backfill` entry up to `mark`."""
    if mark == "0-0":
        return True
    key = keys.stream(FIREHOSE_STREAM)
    info = await _group(redis, key, FIREHOSE_GROUP)
    if info is None or id_key(str(info["last-delivered-id"])) < id_key(mark):
        return False
    oldest = await _oldest_pending(redis, key, FIREHOSE_GROUP)
    return oldest is None or id_key(oldest) > id_key(mark)


@dataclass(frozen=True)
class Gate:
    """The figures an operator approves a stage on."""

    stage: int
    repos: int
    done: int
    failed: int
    dead_lettered: int
    records_written: int
    error_rate: float
    dead_letter_rate: float
    live_lag_s: float | None
    indexed: int
    indexed_share: float
    pass_mark: float
    passed: bool
    at: float
    per_repo: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["per_repo"]
        return out

    def lines(self) -> list[str]:
        lag = "n/a" if self.live_lag_s is None else f"{self.live_lag_s:.1f} s"
        verdict = "PASS" if self.passed else "FAIL"
        return [
            f"stage {self.stage}: {self.repos} repos: {self.done} done, {self.failed} failed, "
            f"{self.dead_lettered} dead-lettered; {self.records_written} records written",
            f"error rate {self.error_rate:.1%}, dead-letter rate {self.dead_letter_rate:.1%}, live lag {lag}",
            f"fully indexed {self.indexed}/{self.repos} = {self.indexed_share:.1%} "
            f"(pass mark {self.pass_mark:.0%}): {verdict}",
        ]


async def _entries_after(redis: aioredis.Redis, key: str, start: str) -> list[tuple[str, dict[bytes, bytes]]]:
    out: list[tuple[str, dict[bytes, bytes]]] = []
    cursor = "(" + start
    while True:
        rows: Any = await redis.xrange(key, min=cursor, count=_PAGE)
        out += [(_text(i), f) for i, f in rows]
        if len(rows) < _PAGE:
            return out
        cursor = "(" + _text(rows[-1][0])


async def failures(
    redis: aioredis.Redis, keys: Keys, name: str, start_ids: dict[str, str], dids: set[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(DID -> outcome, DID -> dead-letter error) for the campaign's repos since it started."""
    failed: dict[str, str] = {}
    for _, fields in await _entries_after(
        redis, keys.outcomes(REPO_STREAM), start_ids.get("outcomes", "0-0")
    ):
        did = _text(fields.get(b"did", b""))
        if did in dids:
            failed[did] = _text(fields.get(b"outcome", b"failed"))
    dead: dict[str, str] = {}
    dlq = keys.dlq(keys.stream(REPO_STREAM))
    for _, fields in await _entries_after(redis, dlq, start_ids.get("dlq", "0-0")):
        try:
            job = decode_entry(REPO_STREAM, fields)
        except SchemaError:
            continue
        if isinstance(job, RepoJob) and job.campaign == name and job.did in dids:
            dead[job.did] = _text(fields.get(b"error", fields.get(b"reason", b"")))[:300]
    return failed, dead


async def indexed_state(conn: Any, repos: list[dict[str, Any]]) -> tuple[dict[str, int], set[str]]:
    """(DID -> live records indexed, DIDs whose snapshot is indexed at or past the planned rev)."""
    dids = [r["did"] for r in repos]
    counts: dict[str, int] = {}
    sql = f"SELECT did, count(*) FROM ({live_records_sql()}) r WHERE did = ANY($1) GROUP BY did"
    synced: dict[str, str] = {}
    for i in range(0, len(dids), 5000):
        chunk = dids[i : i + 5000]
        counts.update({d: n for d, n in await conn.fetch(sql, chunk)})
        rows = await conn.fetch(
            "SELECT did, repo_rev FROM actor_sync WHERE did = ANY($1) AND repo_rev IS NOT NULL", chunk
        )
        synced.update({d: rev for d, rev in rows})
    indexed = {r["did"] for r in repos if r["did"] in synced and (r.get("rev") or "") <= synced[r["did"]]}
    return counts, indexed


async def evaluate(
    redis: aioredis.Redis,
    keys: Keys,
    conn: Any,
    name: str,
    stage: int,
    repos: list[dict[str, Any]],
    start_ids: dict[str, str],
    pass_mark: float,
) -> Gate:
    """The gate figures of one stage (`stage` counted from 1)."""
    dids = {r["did"] for r in repos}
    failed, dead = await failures(redis, keys, name, start_ids, dids)
    counts, indexed = await indexed_state(conn, repos)
    per_repo: dict[str, dict[str, Any]] = {}
    for r in repos:
        did = r["did"]
        outcome = (
            "dead-lettered"
            if did in dead
            else f"failed:{failed[did]}"
            if did in failed
            else "indexed"
            if did in indexed
            else "not-indexed"
        )
        per_repo[did] = {"outcome": outcome, "records": counts.get(did, 0), "error": dead.get(did, "")}
    n = len(repos)
    done = n - len(failed.keys() - dead.keys()) - len(dead)
    share = len(indexed) / n if n else 1.0
    return Gate(
        stage=stage,
        repos=n,
        done=done,
        failed=len(failed.keys() - dead.keys()),
        dead_lettered=len(dead),
        records_written=sum(counts.get(d, 0) for d in dids),
        error_rate=round((n - done) / n, 4) if n else 0.0,
        dead_letter_rate=round(len(dead) / n, 4) if n else 0.0,
        live_lag_s=await live_lag_s(redis, keys),
        indexed=len(indexed),
        indexed_share=round(share, 4),
        pass_mark=pass_mark,
        passed=share >= pass_mark,
        at=round(time.time(), 3),
        per_repo=per_repo,
    )


async def stream_marks(redis: aioredis.Redis, keys: Keys) -> dict[str, str]:
    """The last ids of the outcome and dead-letter streams: the campaign reads only what follows."""
    marks: dict[str, str] = {}
    for name, key in (("outcomes", keys.outcomes(REPO_STREAM)), ("dlq", keys.dlq(keys.stream(REPO_STREAM)))):
        try:
            marks[name] = _text((await redis.xinfo_stream(key))["last-generated-id"])
        except ResponseError:
            marks[name] = "0-0"
    return marks


async def health(redis: aioredis.Redis, keys: Keys) -> dict[str, Any]:
    """Lag and dead-letter figures of the pipeline now (the baseline stored at apply, and soak's samples)."""
    out: dict[str, Any] = {"at": round(time.time(), 3), "live_lag_s": await live_lag_s(redis, keys)}
    for stream in (REPO_STREAM, FIREHOSE_STREAM, LIVE_STREAM):
        out[f"dlq_{stream}"] = await redis.xlen(keys.dlq(keys.stream(stream)))
    out["outcomes"] = await redis.xlen(keys.outcomes(REPO_STREAM))
    return out
