"""The demo's watcher: refreshes the dashboard, runs --chaos (kills, a master failover), and waits
for the conditions that end each phase."""

from __future__ import annotations

import random
import sys
import time
from typing import Any

import anyio
import httpx
import redis.asyncio as aioredis

from streams import EmbeddedCluster, Keys, StreamNames
from workers._partitions import partitioning
from workers.demo.options import CHAOS_MIN_KILLS, PROGRESS_EVERY_S, DemoError, DemoOptions
from workers.demo.procs import Child
from workers.demo.progress import RecordCount, Snapshot, progress_line, render, snapshot


class Watcher:
    """Refreshes the dashboard, runs chaos, and waits for conditions."""

    def __init__(
        self,
        options: DemoOptions,
        redis: aioredis.Redis,
        keys: Keys,
        pg: Any,
        http: httpx.AsyncClient,
        relay_host: str,
        children: list[Child],
        started: float,
    ) -> None:
        self.options, self.redis, self.keys, self.pg, self.http = options, redis, keys, pg, http
        self.relay_host, self.children, self.started = relay_host, children, started
        self.chaos = options.chaos
        self.labeler_host = ""
        self.prev: Snapshot | None = None
        self._next_kill = time.monotonic() + options.chaos_interval_s
        self._rng = random.Random(options.seed)
        self._victim: Child | None = None  # the last worker killed
        self._redraw = sys.stdout.isatty()
        self._last_line = 0.0
        self.reached_at = started  # when the condition of the last `until` started to hold
        self._records = RecordCount()
        self.parts = partitioning(keys.prefix, options.partition_count)
        self.cluster: EmbeddedCluster | None = None
        self.failovers = 0

    def chaos_done(self) -> bool:
        """Whether --chaos has killed CHAOS_MIN_KILLS workers (always true without --chaos)."""
        return not self.chaos or sum(c.kills for c in self.children) >= CHAOS_MIN_KILLS

    async def until(
        self, done: Any, phase: str, *, stable: int, cursors: tuple[tuple[str, int], ...] = ()
    ) -> Snapshot:
        ok_in_a_row = 0
        deadline = self.started + self.options.timeout_s
        while True:
            ticked_at = time.monotonic()
            snap = await self._tick(phase)
            reached = done(snap) and await self._cursors_reached(cursors)
            ok_in_a_row = ok_in_a_row + 1 if reached else 0
            if ok_in_a_row == 1:
                self.reached_at = ticked_at
            if ok_in_a_row >= stable:
                return snap
            if time.monotonic() > deadline:
                raise DemoError(f"timed out in phase {phase!r} after {self.options.timeout_s:.0f}s")
            await anyio.sleep(0.5)

    async def _cursors_reached(self, cursors: tuple[tuple[str, int], ...]) -> bool:
        for key, seq in cursors:
            value = await self.redis.get(key)
            if seq > 0 and (value is None or int(value) < seq):
                return False
        return True

    async def _tick(self, phase: str) -> Snapshot:
        for child in self.children:
            child.restart_if_dead()
        if self.chaos and time.monotonic() >= self._next_kill:
            # Only once the last one killed is up again (has logged since its restart): one down
            # at a time. Killed again and again while still importing (seconds on a loaded
            # machine, more than a short --chaos-interval), the workers would do no work and the
            # run could only time out.
            if self._victim is None or self._victim.up:
                self._victim = self._rng.choice(self.children)
                self._victim.kill()
                self._next_kill = time.monotonic() + self.options.chaos_interval_s
        if self.chaos and self.cluster is not None and not self.failovers and self._backfilling():
            self.failovers += 1
            await anyio.to_thread.run_sync(self._fail_over, self.cluster)
        devnet = (await self.http.get("/stats")).json()
        records = await self._records.refresh(self.pg)
        snap = await snapshot(self.redis, self.keys, records, self.relay_host, devnet, self.parts)
        if not self.options.json:
            self._show(snap, phase)
        self.prev = snap
        return snap

    def _backfilling(self) -> bool:
        """Records are flowing through firehose_backfill: a good moment to lose a master."""
        row = self.prev.rows.get(StreamNames.FIREHOSE_BACKFILL) if self.prev is not None else None
        return row is not None and row.added > 0

    def _fail_over(self, cluster: EmbeddedCluster) -> None:
        """SIGKILL the master of firehose_backfill's first partition (in a thread: it blocks), wait
        until its replica serves its slots, and start it again (it rejoins as that replica's
        replica, so WAIT 1 is answered again). The workers ride it out on their own."""
        master = cluster.node_for_key(self.parts.partition_keys(StreamNames.FIREHOSE_BACKFILL)[0])
        cluster.kill(master)
        cluster.wait_failover(master)
        cluster.restart(master)

    def _show(self, snap: Snapshot, phase: str) -> None:
        """Redraw the dashboard on a terminal; elsewhere (a file, a pipe) a line every few seconds."""
        if self._redraw:
            print("\x1b[H\x1b[2J" + render(snap, self.prev, self.children, self.started, phase), flush=True)
        elif time.monotonic() - self._last_line >= PROGRESS_EVERY_S:
            print(progress_line(snap, self.children, self.started, phase), flush=True)
            self._last_line = time.monotonic()
