"""What a `Consumer` is told (`ConsumerConfig`) and what it reports (`ConsumerStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams._retry import Backoff


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """How one consumer reads one stream in one group."""

    stream: str
    group: str
    consumer: str
    batch_size: int = 100
    concurrency: int = 2
    block_ms: int = 2000
    # After a read of new entries that filled less than a batch, wait this long before the next
    # one (stop() cuts it short): a stream fed slower than it is read gets fewer, fuller batches
    # (less work per entry) at the price of this much latency. A full read never waits.
    linger_ms: int = 0
    # Entries idle this long are taken over by other consumers; must exceed the lease renewal
    # interval (a third of it) by a wide margin so live work is never stolen.
    min_idle_ms: int = 60_000
    reclaim_interval_s: float = 10.0
    max_deliveries: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    group_start_id: str = "0"
    dlq_stream: str | None = None  # default `<stream>:dlq`

    def __post_init__(self) -> None:
        # A consumer without a handler slot would read nothing and wait forever.
        for name in ("batch_size", "concurrency", "max_deliveries", "min_idle_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"ConsumerConfig.{name} must be at least 1, got {getattr(self, name)}")

    @property
    def lease_interval_s(self) -> float:
        return self.min_idle_ms / 3000


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    """A snapshot of what one consumer has done since it started."""

    stream: str
    group: str
    consumer: str
    acked: int
    retried: int
    dead_lettered: int
    reclaimed: int
    in_flight: int
    scheduled_retries: int
    last_error: str
