"""`Devnet`: generates the world, serves relay, PLC, labeler and PDS hosts, and runs live activity.

async with Devnet(DevnetConfig(repos=100, seed=7)) as net:
    net.relay_url, net.plc_url, net.labeler_url, net.pds_urls
    net.step(10); net.truth(); net.faults.hang_dids.add(did)
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from aiohttp import web

from devnet.activity import Activity, move_account
from devnet.config import DevnetConfig
from devnet.events import emit_account
from devnet.faults import Faults
from devnet.generate import generate_world
from devnet.http import Urls
from devnet.labeler import labeler_app
from devnet.pds import pds_app
from devnet.plc import plc_app
from devnet.relay import relay_app
from devnet.state import STATUSES, World
from devnet.truth import truth_lines, write_truth

__all__ = ["Devnet"]

# Server shutdown should not wait for hanging getRepo responses (a deliberate fault) to finish.
_SHUTDOWN_TIMEOUT_S = 0.5
# The activity loop catches up at most this many events per wake-up when it falls behind.
_MAX_BURST = 200
_TICK_S = 0.01


class Devnet:
    """A running local AT Protocol network; use as `async with Devnet(config) as net:`."""

    def __init__(self, config: DevnetConfig | None = None) -> None:
        self.config = config or DevnetConfig()
        self.urls = Urls()
        self._runners: list[web.AppRunner] = []
        self._running = asyncio.Event()
        self._activity_task: asyncio.Task[None] | None = None
        self._world: World | None = None
        self._faults: Faults | None = None
        self._activity: Activity | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Devnet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Generate the world (in a thread: it is CPU-bound), bind every server, start activity."""
        world = await asyncio.to_thread(generate_world, self.config)
        self._world = world
        self._faults = Faults(self.config.faults, world.all_dids)
        self._activity = Activity(world, self.config)
        self._activity.labels(self.config.initial_labels)
        try:
            await self._serve_all(world, self._faults)
        except BaseException:
            await self.stop()
            raise
        self._running.set()
        if self.config.firehose_rate > 0:
            self._activity_task = asyncio.create_task(self._run_activity(), name="devnet-activity")

    async def _serve(self, app: web.Application, port: int) -> str:
        runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT_S, handler_cancellation=True
        )
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, self.config.host, port).start()
        host, bound = runner.addresses[0][:2]
        return f"http://{host}:{bound}"

    async def _serve_all(self, world: World, faults: Faults) -> None:
        base = self.config.port

        def port(offset: int) -> int:
            return base + offset if base else 0

        self.urls.relay = await self._serve(relay_app(world, faults, self.urls, self), port(0))
        self.urls.plc = await self._serve(plc_app(world, self.urls), port(1))
        self.urls.labeler = await self._serve(labeler_app(world, faults), port(2))
        for index in range(self.config.pds_hosts):
            self.urls.pds.append(await self._serve(pds_app(world, faults, index), port(3 + index)))

    async def stop(self) -> None:
        """Stop activity and every server."""
        if self._activity_task is not None:
            self._activity_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._activity_task
            self._activity_task = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    async def _run_activity(self) -> None:
        """Emit `firehose_rate` events per second (on average) while not paused."""
        loop = asyncio.get_running_loop()
        rate = self.config.firehose_rate
        done, started = 0, loop.time()
        while True:
            if not self._running.is_set():
                await self._running.wait()
                done, started = 0, loop.time()  # a pause is not a backlog to catch up on
            due = int((loop.time() - started) * rate) - done
            if due > _MAX_BURST:
                done += due - _MAX_BURST  # too far behind: skip ahead rather than flood
                due = _MAX_BURST
            for _ in range(due):
                self.activity.step()
            done += due
            await asyncio.sleep(max(_TICK_S, started + (done + 1) / rate - loop.time()))

    # -- accessors ---------------------------------------------------------------------------

    @property
    def world(self) -> World:
        """The mutable world (for tests and tools that need to look inside)."""
        if self._world is None:
            raise RuntimeError("devnet not started")
        return self._world

    @property
    def faults(self) -> Faults:
        """Runtime fault switches."""
        if self._faults is None:
            raise RuntimeError("devnet not started")
        return self._faults

    @property
    def activity(self) -> Activity:
        """The live-activity driver."""
        if self._activity is None:
            raise RuntimeError("devnet not started")
        return self._activity

    @property
    def relay_url(self) -> str:
        """Base URL of the relay (listRepos, getRepo redirect, subscribeRepos, /truth, /stats)."""
        return self.urls.relay

    @property
    def plc_url(self) -> str:
        """Base URL of the PLC directory."""
        return self.urls.plc

    @property
    def labeler_url(self) -> str:
        """Base URL of the labeler (subscribeLabels)."""
        return self.urls.labeler

    @property
    def pds_urls(self) -> list[str]:
        """Base URLs of the PDS hosts, by index."""
        return list(self.urls.pds)

    @property
    def labeler_did(self) -> str:
        """DID of the labeler (resolvable through the PLC directory)."""
        return self.world.labeler_did

    def describe(self) -> dict[str, Any]:
        """URLs and identity of this devnet as one JSON-able dict (what the CLI prints)."""
        return {
            "relay": self.relay_url,
            "plc": self.plc_url,
            "labeler": self.labeler_url,
            "labeler_did": self.labeler_did,
            "pds": self.pds_urls,
            "firehose": self.relay_url.replace("http", "ws", 1) + "/xrpc/com.atproto.sync.subscribeRepos",
            "labels": self.labeler_url.replace("http", "ws", 1) + "/xrpc/com.atproto.label.subscribeLabels",
            "repos": self.config.repos,
            "seed": self.config.seed,
        }

    # -- control -----------------------------------------------------------------------------

    def pause_activity(self) -> None:
        """Stop live activity after the current event (state is then frozen unless `step` is called)."""
        self._running.clear()

    def resume_activity(self) -> None:
        """Resume live activity."""
        self._running.set()

    def step(self, n: int = 1) -> list[str]:
        """Produce `n` events now, synchronously; return their kinds."""
        return [self.activity.step() for _ in range(n)]

    def set_status(self, did: str, status: str, *, emit: bool = True) -> None:
        """Change an account's hosting status (active/takendown/deactivated/deleted), with #account."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        account = self.world.by_did[did]
        account.status = status
        account.car = None
        if emit:
            emit_account(self.world, account)

    def move(self, did: str, to_pds: int) -> None:
        """Migrate an account to PDS `to_pds` (#identity, #account from the new host, and a stale
        #account "deactivated" from the old one)."""
        if not 0 <= to_pds < self.config.pds_hosts or to_pds == self.world.by_did[did].pds:
            raise ValueError(f"to_pds must be another of the {self.config.pds_hosts} PDS hosts")
        move_account(self.world, self.world.by_did[did], to_pds)

    def set_missing(self, did: str, missing: bool = True) -> None:
        """Make the PDS forget (or remember) a repo the relay still lists as active."""
        self.world.by_did[did].missing = missing

    def truth(self) -> list[dict[str, Any]]:
        """The ground truth now, as a list of dicts (see `devnet.truth`)."""
        return truth_lines(self.world)

    def write_truth(self, path: str | Path | None = None) -> tuple[Path, int]:
        """Write the truth as JSON lines to `path` (default: the configured truth path)."""
        target = path or self.config.truth_path
        if not target:
            raise ValueError("no truth path: pass one or configure truth_path")
        lines = write_truth(self.world, target)
        return Path(target), lines

    def stats(self) -> dict[str, Any]:
        """Counters: repos, records, events emitted, requests served, faults injected."""
        world = self.world
        return {
            "repos": len(world.accounts),
            "active_repos": sum(1 for a in world.accounts if a.active),
            "relay_omitted": sum(1 for a in world.accounts if a.relay_omitted),
            "records": world.record_total(),
            "live_records": world.live_record_total(),
            "firehose_seq": world.firehose.last_seq,
            "labels_seq": world.labels.last_seq,
            "live_labels": len(world.live_labels),
            "counters": dict(sorted(world.counters.items())),
            "faults": self.faults.snapshot(),
            "activity": "running" if self._running.is_set() and self._activity_task else "paused",
        }
