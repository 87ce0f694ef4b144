"""What the demo watches: stream lengths, lag and rates, progress, worker health; the dashboard."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from streams import CURSOR_DONE, Keys, Partitioning, StreamNames
from workers.campaign.actions import active_campaign_lines
from workers.demo.procs import Child
from workers.indexer.collections import live_records_sql
from workers.ingester.discovery import discovery_rounds

STREAMS = (
    (StreamNames.REPO_BACKFILL, "repo_backfill_group"),
    (StreamNames.FIREHOSE_BACKFILL, "firehose_group"),
    (StreamNames.FIREHOSE_LIVE, "firehose_group"),
    (StreamNames.LABEL_LIVE, "label_group"),
)


@dataclass(frozen=True)
class StreamRow:
    name: str
    length: int
    added: int
    lag: int
    pending: int
    dlq: int
    read: int


@dataclass(frozen=True)
class Snapshot:
    at: float
    rows: dict[str, StreamRow]
    listing_done: bool
    records_indexed: int
    devnet: dict[str, Any] = field(default_factory=dict)
    database_bytes: int = 0  # measured once, after the verdict
    campaigns: tuple[str, ...] = ()  # one line per active backfill campaign, with its progress bar

    def drained(self) -> bool:
        return all(r.lag == 0 and r.pending == 0 for r in self.rows.values())


async def _row(redis: aioredis.Redis, keys: Keys, name: str, group: str, parts: Partitioning) -> StreamRow:
    """One logical stream: the sum over its partitions (and its own DLQ, where records refused
    before they were written go)."""
    length = added = lag = pending = read = 0
    dlq = int(await redis.xlen(keys.dlq(keys.stream(name))))
    for key in parts.partition_keys(name):
        if key != keys.stream(name):
            dlq += int(await redis.xlen(keys.dlq(key)))
        if not await redis.exists(key):
            continue
        info = await redis.xinfo_stream(key)
        groups = {g["name"].decode(): g for g in await redis.xinfo_groups(key)}
        g = groups.get(group)
        part_added = int(info.get("entries-added", info["length"]))
        length += int(info["length"])
        added += part_added
        lag += part_added if g is None else int(g["lag"] if g.get("lag") is not None else info["length"])
        pending += 0 if g is None else int(g["pending"])
        read += 0 if g is None else int(g.get("entries-read") or 0)
    return StreamRow(name, length, added, lag, pending, dlq, read)


class RecordCount:
    """The number of live records, for the dashboard: an exact count, taken at most once per
    `_COUNT_EVERY` times the last count's duration, so that on a big network the dashboard
    never takes more than a small share of PostgreSQL from the indexers."""

    _COUNT_EVERY = 20

    def __init__(self) -> None:
        self.value = 0
        self._next_at = 0.0

    async def refresh(self, pg: Any) -> int:
        started = time.monotonic()
        if started < self._next_at:
            return self.value
        try:
            self.value = int(await pg.fetchval(f"SELECT count(*) FROM ({live_records_sql()}) r"))
        except Exception:  # the schema may not exist yet in the first second
            self.value = 0
        self._next_at = started + self._COUNT_EVERY * (time.monotonic() - started)
        return self.value


async def snapshot(
    redis: aioredis.Redis,
    keys: Keys,
    records: int,
    relay_host: str,
    devnet: dict[str, Any],
    parts: Partitioning | None = None,
) -> Snapshot:
    parts = parts or Partitioning(keys)
    rows = {name: await _row(redis, keys, name, group, parts) for name, group in STREAMS}
    cursor = await redis.get(keys.cursor(StreamNames.REPO_BACKFILL, relay_host))
    # Listing is done when the relay's listRepos is, and a first round of host discovery too.
    listed = cursor == CURSOR_DONE.encode() and await discovery_rounds(redis, keys, relay_host) > 0
    campaigns = tuple(await active_campaign_lines(redis, keys))
    return Snapshot(time.monotonic(), rows, listed, records, devnet, campaigns=campaigns)


def _bar(done: int, total: int, width: int = 32) -> str:
    frac = 0.0 if total <= 0 else min(1.0, done / total)
    full = int(frac * width)
    return "█" * full + "░" * (width - full) + f" {done:>8,}/{total:<8,} {frac * 100:5.1f}%"


def render(
    now: Snapshot, prev: Snapshot | None, children: Sequence[Child], started: float, phase: str
) -> str:
    dt = max(1e-3, now.at - prev.at) if prev else 1.0
    lines = [f"streamfill demo — {phase} — {time.monotonic() - started:6.1f}s", ""]
    lines.append(f"{'stream':<20}{'length':>10}{'lag':>10}{'pending':>10}{'dlq':>6}{'in/s':>10}{'out/s':>10}")
    for name, row in now.rows.items():
        before = prev.rows.get(name) if prev else None
        rate_in = (row.added - before.added) / dt if before else 0.0
        rate_out = (row.read - before.read) / dt if before else 0.0
        lines.append(
            f"{name:<20}{row.length:>10,}{row.lag:>10,}{row.pending:>10,}{row.dlq:>6,}"
            f"{rate_in:>10,.0f}{rate_out:>10,.0f}"
        )
    repos = int(now.devnet.get("repos", 0))
    records = int(now.devnet.get("live_records", 0))  # records of active repos: the indexing goal
    listed = now.rows[StreamNames.REPO_BACKFILL].added
    backfilled = now.rows[StreamNames.REPO_BACKFILL].read - now.rows[StreamNames.REPO_BACKFILL].pending
    lines += [
        "",
        f"repos listed      {_bar(min(listed, repos), repos)}" + ("  (done)" if now.listing_done else ""),
        f"repos backfilled  {_bar(min(backfilled, repos), repos)}",
        f"records indexed   {_bar(now.records_indexed, records)}",
        *now.campaigns,
        "",
    ]
    for c in children:
        state = "up  " if c.alive else "DOWN"
        lines.append(f"  {c.name:<14} {state} restarts={c.restarts} kills={c.kills}")
    return "\n".join(lines)


def progress_line(now: Snapshot, children: Sequence[Child], started: float, phase: str) -> str:
    """The dashboard in one line, for output that is not a terminal (a log file, a pipe)."""
    repos = int(now.devnet.get("repos", 0))
    records = int(now.devnet.get("live_records", 0))
    listing = now.rows[StreamNames.REPO_BACKFILL]
    lag = sum(r.lag for r in now.rows.values())
    dlq = sum(r.dlq for r in now.rows.values())
    up = sum(1 for c in children if c.alive)
    elapsed = time.monotonic() - started
    return (
        f"demo {phase} {elapsed:.0f}s: repos listed {min(listing.added, repos):,}/{repos:,}"
        + (" (done)" if now.listing_done else "")
        + f", backfilled {min(listing.read - listing.pending, repos):,}/{repos:,}"
        f", records indexed {now.records_indexed:,}/{records:,}, lag {lag:,}, dlq {dlq:,}"
        f", workers up {up}/{len(children)}"
    )
