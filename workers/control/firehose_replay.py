"""Reading a window `A..B` of a relay's subscribeRepos into firehose_live again.

The subscription starts at cursor A-1 and stops after B; frames are converted by the ingester's
own FirehoseConverter (the same entries, dead letters and resync jobs a live ingester writes)
and written in batches through the partitioned producer. The ingester's cursor is not touched.
A window the relay no longer serves is refused before anything is written: the relay says
OutdatedCursor, or its first frame is past A (its log starts later).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import redis.asyncio as aioredis

from atp import AtpError
from atp.did import DidResolver
from atp.frames import ErrorFrame, InfoFrame, decode_frame
from atp.http import HttpClient
from atp.netpolicy import NetPolicy
from atp.subscribe import SUBSCRIBE_REPOS, stream_url, subscribe
from streams import (
    Fields,
    Keys,
    PartitionedProducer,
    ProducerConfig,
    StreamNames,
    Throttle,
    default_consumer_name,
)
from workers._errors import EdgeError
from workers._identity import IdentityCache
from workers._partitions import partitioning
from workers._throttle import live_keys, live_throttle
from workers.control.recovery import RecoveryConfig
from workers.ingester.eventstream import SourceUnavailable
from workers.ingester.firehose import FirehoseConverter

BATCH = 200  # entries per write
IDLE_S = 15.0  # no frame for this long: the window ends past the relay's newest frame
RECONNECTS = 5  # a dropped connection resumes after the last frame written, this many times


class WindowRefused(EdgeError):
    """The relay does not serve (all of) the window."""


@dataclass
class Replayed:
    frames: int = 0
    entries: int = 0
    last_seq: int = 0


class _Window:
    """The state of one replay: where it is, what is waiting to be written."""

    def __init__(
        self,
        first: int,
        last: int,
        producer: PartitionedProducer,
        rate: float | None,
        throttle: Throttle | None,
    ) -> None:
        self.first, self.last = first, last
        self.producer = producer
        self.rate = rate
        self.throttle = throttle
        self.result = Replayed(last_seq=first - 1)
        self.entries: list[Fields] = []
        self.extra: list[tuple[str, Fields]] = []
        self.started = anyio.current_time()

    @property
    def done(self) -> bool:
        return self.result.last_seq >= self.last

    def check_start(self, seq: int) -> None:
        if self.result.frames == 0 and seq > self.first:
            raise WindowRefused(
                f"the relay's firehose starts at seq {seq} now, after --from-seq {self.first}: "
                "the window is no longer served (resync the affected repos instead)"
            )

    async def pace(self) -> None:
        if self.rate:
            due = self.started + self.result.frames / self.rate
            await anyio.sleep(max(0.0, due - anyio.current_time()))

    async def flush(self) -> None:
        if self.entries or self.extra:
            if self.throttle is not None:  # slowed, then paused, while live traffic falls behind
                await self.throttle.wait()
            await self.producer.send(self.entries, extra=self.extra)
            self.result.entries += len(self.entries)
            self.entries, self.extra = [], []


async def replay_window(
    redis: aioredis.Redis, config: RecoveryConfig, relay: str, first: int, last: int, *, rate: float | None
) -> Replayed:
    """Write frames `first..last` of `relay` to firehose_live; WindowRefused if not served."""
    keys = Keys(config.prefix)
    producer = PartitionedProducer(
        redis,
        ProducerConfig(keys.stream(StreamNames.FIREHOSE_LIVE), high_water=config.high_water_mark),
        partitioning(config.prefix, config.partitions),
        wait_replicas=config.wait_replicas,
        wait_timeout_ms=config.wait_timeout_ms,
    )
    live = live_keys(config.prefix, config.partitions)
    throttle = live_throttle(redis, config, default_consumer_name("firehose-replay"), live)
    window = _Window(first, last, producer, rate, throttle)
    async with _converter(redis, config, relay) as converter:
        failures = 0
        while not window.done:
            try:
                await _follow(stream_url(relay, SUBSCRIBE_REPOS), window, converter)
            except (AtpError, SourceUnavailable) as exc:
                await window.flush()
                failures += 1
                if failures > RECONNECTS:
                    raise EdgeError(_stopped(relay, window, exc)) from exc
                await anyio.sleep(0.2 * failures)
        await window.flush()
    return window.result


def _stopped(relay: str, window: _Window, exc: Exception) -> str:
    return (
        f"firehose replay of {relay} stopped after seq {window.result.last_seq} "
        f"(of {window.first}..{window.last}): {exc}"
    )


@contextlib.asynccontextmanager
async def _converter(
    redis: aioredis.Redis, config: RecoveryConfig, relay: str
) -> AsyncIterator[FirehoseConverter]:
    keys = Keys(config.prefix)
    policy = NetPolicy(allow_private=config.allow_private_hosts).trusting([relay, config.plc_url])
    async with HttpClient(policy, read_timeout_s=30.0) as http:
        cache = IdentityCache(redis, keys, DidResolver(http, plc_url=config.plc_url))
        yield FirehoseConverter(
            relay,
            keys.stream(StreamNames.FIREHOSE_LIVE),
            keys.stream(StreamNames.REPO_BACKFILL),
            cache if config.verify_signatures else None,
        )


async def _follow(url: str, window: _Window, converter: FirehoseConverter) -> None:
    """One connection from after the last frame written; returns once the window is done."""
    frames = subscribe(url, cursor=window.result.last_seq)
    try:
        while not window.done:
            await _one(await _next(frames, window), window, converter)
    finally:
        await frames.aclose()


async def _next(frames: AsyncIterator[bytes], window: _Window) -> bytes:
    with anyio.move_on_after(IDLE_S):
        return await anext(frames)
    await window.flush()
    raise WindowRefused(
        f"the relay sent nothing after seq {window.result.last_seq} for {IDLE_S:.0f}s: --to-seq "
        f"{window.last} is past its newest frame (seq {window.first}..{window.result.last_seq} were replayed)"
    )


async def _one(raw: bytes, window: _Window, converter: FirehoseConverter) -> None:
    frame = decode_frame(raw)
    if isinstance(frame, InfoFrame) and frame.name == "OutdatedCursor":
        raise WindowRefused(
            f"the relay no longer serves seq {window.first} (OutdatedCursor: {frame.message}); "
            "resync the affected repos instead"
        )
    if isinstance(frame, ErrorFrame):
        raise WindowRefused(f"the relay refused the window: {frame.error} {frame.message or ''}".strip())
    seq = getattr(frame, "seq", None)
    if not isinstance(seq, int) or seq <= window.result.last_seq:
        return
    window.check_start(seq)
    if seq > window.last:
        window.result.last_seq = window.last
        return
    converted = await converter.convert(raw)
    window.entries += converted.entries
    window.extra += converted.extra
    window.result.frames += 1
    window.result.last_seq = seq
    if len(window.entries) + len(window.extra) >= BATCH:
        await window.flush()
    await window.pace()
