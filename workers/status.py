"""`streamfill status`: one report of everything an operator watches, as text or one JSON document.

The report is gathered once (`gather`) and rendered twice (`render_status` for people,
`StatusReport.to_json` for scripts), so the text and the JSON never disagree:

    streams     every stream under the prefix (a partitioned one as its totals), its groups, lag
                in entries and seconds, pending, consumers, DLQ length, hosts backed off after 429
    ledgers     skip-ahead and event-stream gap ledgers that still hold ranges
    campaigns   running, paused or gated campaigns
    throttled   workers whose bulk production is paused on live lag
    workers     every live worker's heartbeat (kind, name, overrides it applies)
    readiness   what an indexer's /readyz would answer that Redis can tell (warmup, lag)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import anyio
import redis.asyncio as aioredis

from streams import Keys, throttled_states
from streams.admin import (
    LogicalStreamInfo,
    StreamInfo,
    list_streams,
    logical_stream,
    merge,
    partition_number,
    skip_ledgers,
    stream_info,
)
from workers.campaign.actions import status_line
from workers.campaign.state import ACTIVE, Campaign, CampaignStore
from workers.control.agent import heartbeats, worker_summary
from workers.health import readiness_line, status_readiness, throttle_lines


@dataclass(frozen=True)
class StatusReport:
    """What `status` shows, read from Redis at one moment."""

    at: float
    streams: list[StreamInfo]
    backoffs: dict[str, list[dict[str, Any]]]
    ledgers: dict[str, int]
    campaigns: list[Campaign]
    throttled: list[dict[str, object]]
    workers: list[dict[str, Any]]
    readiness: list[dict[str, Any]]

    def to_json(self, *, partitions: bool = False) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "streams": [
                _stream_json(i, partitions) | {"host_backoff": self.backoffs[i.stream]} for i in self.streams
            ],
            "ledgers": self.ledgers,
            "campaigns": [c.to_json() for c in self.campaigns],
            "throttled": self.throttled,
            "workers": self.workers,
            "readiness": {"ready": not self.readiness, "reasons": self.readiness},
        }


async def gather(redis: aioredis.Redis, keys: Keys, ready_max_lag_s: float) -> StatusReport:
    """Read everything `status` reports."""
    infos = await logical_infos(redis, keys)
    store = CampaignStore(redis, keys)
    found = [await store.find(n) for n in await store.names()]
    return StatusReport(
        at=time.time(),
        streams=infos,
        backoffs={i.stream: await host_backoffs(redis, keys, i.stream) for i in infos},
        ledgers=await skip_ledgers(redis, keys),
        campaigns=[c for c in found if c is not None and c.state in ACTIVE],
        throttled=await throttled_states(redis, keys.throttle_pattern()),
        workers=await heartbeats(redis, keys),
        readiness=await status_readiness(redis, keys, ready_max_lag_s),
    )


async def run_status(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace) -> int:
    """The `status` command: one report, or one a second with `--watch`."""
    while True:
        report = await gather(redis, keys, args.config.ready_max_lag_s)
        if args.json:
            print(json.dumps(report.to_json(partitions=args.partitions)), flush=True)
        else:
            text = render_status(report.streams, report.ledgers, report.backoffs, partitions=args.partitions)
            more = [status_line(c) for c in report.campaigns]
            more += throttle_lines(report.throttled)
            more += worker_summary(report.workers)  # the heartbeats read once, by gather
            more.append(readiness_line(report.readiness))
            redraw = args.watch and sys.stdout.isatty()  # a file or a pipe gets one report after another
            print(("\x1b[H\x1b[2J" if redraw else "") + text + "".join(f"\n{m}" for m in more), flush=True)
        if not args.watch:
            return 0
        await anyio.sleep(1)


async def logical_infos(redis: aioredis.Redis, keys: Keys) -> list[StreamInfo]:
    """Every stream under the prefix; a partitioned one as its totals (`LogicalStreamInfo`)."""
    by_stream: dict[str, list[StreamInfo]] = {}
    for key in await list_streams(redis, keys):
        by_stream.setdefault(logical_stream(keys, key), []).append(await stream_info(redis, key))
    infos: list[StreamInfo] = []
    for stream, parts in sorted(by_stream.items()):
        if len(parts) == 1 and parts[0].stream == stream:
            infos.append(parts[0])
        else:
            parts.sort(key=lambda p: partition_number(keys, p.stream))
            infos.append(merge(stream, parts, int(await redis.xlen(keys.dlq(stream)))))
    return infos


def _stream_json(info: StreamInfo, partitions: bool) -> dict[str, Any]:
    doc = info.to_json()
    if not partitions:
        doc.pop("partitions", None)
    return doc


async def host_backoffs(redis: aioredis.Redis, keys: Keys, stream: str) -> list[dict[str, Any]]:
    """Hosts the consumers of `stream` are backing off from after a 429 (what each published)."""
    out: list[dict[str, Any]] = []
    now = time.time()
    async for key in redis.scan_iter(match=keys.backoff_pattern(stream), _type="string", count=500):
        consumer = key.decode().rsplit(":backoff:", 1)[-1]
        try:
            hosts = json.loads(await redis.get(key) or b"{}")
        except ValueError:
            continue
        for host, state in sorted(hosts.items()):
            remaining = float(state.get("until", 0)) - now
            if remaining > 0:
                throttled = int(state.get("throttled", 0))
                out.append(
                    {
                        "consumer": consumer,
                        "host": host,
                        "backoff_s": round(remaining, 1),
                        "throttled": throttled,
                    }
                )
    return out


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def render_status(
    infos: list[StreamInfo],
    ledgers: dict[str, int] | None = None,
    backoffs: dict[str, list[dict[str, Any]]] | None = None,
    *,
    partitions: bool = False,
) -> str:
    """The streams part of the text report (the lines every stream, ledger and backoff gets)."""
    lines = [time.strftime("%Y-%m-%d %H:%M:%S") + "  streamfill status", ""]
    if not infos:
        lines.append("(no streams)")
    for i in infos:
        parts = i.partitions if isinstance(i, LogicalStreamInfo) else []
        lines.extend(_stream_lines(i, "", f"  partitions={len(parts)}" if parts else ""))
        for part in parts if partitions else ():
            lines.extend(_stream_lines(part, "    ", ""))
        lines.extend(
            f"  backoff {b['host']}  {_age(b['backoff_s'])} left  "
            f"(consumer {b['consumer']}, 429s seen: {b['throttled']})"
            for b in (backoffs or {}).get(i.stream, ())
        )
    for ledger, count in (ledgers or {}).items():
        if count and Keys.is_gaps(ledger):
            lines.append(
                f"{ledger}  {count} event-stream gap(s): never read; fill by a resync "
                "(docs/operations.md, followers that never wedge)"
            )
        elif count:
            lines.append(f"{ledger}  {count} skipped range(s): streamfill ingester --retry-skipped")
    return "\n".join(lines)


def _stream_lines(i: StreamInfo, indent: str, more: str) -> list[str]:
    lines = [
        f"{indent}{i.stream}  length={i.length}  first={_age(i.first_age_s)} old  "
        f"last={_age(i.last_age_s)} old  dlq={i.dlq_length}{more}"
    ]
    for g in i.groups:
        lag = "?" if g.lag is None else str(g.lag)
        behind = "" if g.lag_s is None else f" ({_age(g.lag_s)} behind)"
        lines.append(
            f"{indent}  group {g.name}  lag={lag}{behind}  pending={g.pending}  "
            f"last-delivered={g.last_delivered_id}"
        )
        for c in g.consumers:
            idle = _age(c.idle_ms / 1000)
            lines.append(f"{indent}    consumer {c.name}  pending={c.pending}  idle={idle}")
    return lines
