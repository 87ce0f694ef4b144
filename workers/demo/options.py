"""What a demo run is asked to do (`streamfill demo` flags), and how it fails."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# A --chaos run's backfill phase lasts at least this many kills.
CHAOS_MIN_KILLS = 3


@dataclass(frozen=True)
class DemoOptions:
    repos: int = 500
    seed: int = 1
    firehose_rate: float = 20.0
    chaos: bool = False
    chaos_interval_s: float = 4.0
    keep: bool = False
    json: bool = False
    timeout_s: float = 1500.0
    redis_url: str | None = None
    database_url: str | None = None
    workdir: Path | None = None
    cluster: int = 0  # masters of an embedded Redis Cluster (each with a replica); 0: one Valkey
    partitions: int = 0  # STREAMFILL_PARTITIONS; 0: twice the masters on a cluster, else 1
    backfillers: int = 2
    indexers: int = 2

    @property
    def partition_count(self) -> int:
        if self.partitions:
            return self.partitions
        return 2 * self.cluster if self.cluster else 1


# How often the demo prints a progress line when its output is not a terminal.
PROGRESS_EVERY_S = 5.0


class DemoError(Exception):
    """The demo could not run to a verdict."""
