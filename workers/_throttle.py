"""The live-lag throttle of a worker's bulk producers: what counts as live, and its settings.

Live means `firehose_live` (every partition) and `label_live`, every group of them: a backfill or
a replay must not delay what the network is doing now, whoever reads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import redis.asyncio as aioredis

from streams import Keys, Pace, StreamNames, Throttle, ThrottleConfig, default_consumer_name
from streams.admin import partitions_of
from workers._partitions import partitioning

# As the indexer's live-first (indexer/config.py).
LIVE_STREAMS = (StreamNames.FIREHOSE_LIVE, StreamNames.LABEL_LIVE)


class ThrottleSettings(Protocol):
    """The config fields `throttle_settings()` declares (and the prefix)."""

    @property
    def prefix(self) -> str: ...
    @property
    def throttle(self) -> bool: ...
    @property
    def throttle_live_lag_s(self) -> float: ...
    @property
    def throttle_resume_lag_s(self) -> float: ...


def live_keys(prefix: str, partitions: int) -> list[str]:
    """The keys of the live streams: every partition of firehose_live, and label_live."""
    parts = partitioning(prefix, partitions)
    return [*parts.partition_keys(StreamNames.FIREHOSE_LIVE), Keys(prefix).stream(StreamNames.LABEL_LIVE)]


def retune_throttle(throttle: Throttle | None, config: ThrottleSettings) -> None:
    """Apply live overrides of the thresholds (THROTTLE_ENABLED takes a restart)."""
    if throttle is not None:
        throttle.retune(pause_above_s=config.throttle_live_lag_s, resume_below_s=config.throttle_resume_lag_s)


def live_throttle(
    redis: aioredis.Redis, config: ThrottleSettings, worker: str, live: Sequence[str]
) -> Throttle | None:
    """The throttle a worker's bulk producers share, watching `live` keys; None when disabled."""
    if not config.throttle:
        return None
    return Throttle(
        redis,
        ThrottleConfig(
            watched=tuple((key, "") for key in live),
            pause_above_s=config.throttle_live_lag_s,
            resume_below_s=config.throttle_resume_lag_s,
            worker=worker,
            state_key=Keys(config.prefix).throttle(worker),
        ),
    )


async def replay_gate(
    redis: aioredis.Redis, keys: Keys, config: ThrottleSettings, rate: float | None
) -> Callable[[], Awaitable[None]]:
    """What an operator's replay awaits before each entry: the live-lag throttle (unless
    THROTTLE_ENABLED=false; the live streams' partitions as they exist), then `rate` a second."""
    live = [
        *await partitions_of(redis, keys, StreamNames.FIREHOSE_LIVE),
        *await partitions_of(redis, keys, StreamNames.LABEL_LIVE),
    ]
    throttle = live_throttle(redis, config, default_consumer_name("dlq-replay"), live)
    pace = Pace(rate)

    async def gate() -> None:
        if throttle is not None:
            await throttle.wait()
        await pace.take()

    return gate
