"""Child processes of the demo: start, watch, SIGKILL and restart, stop gracefully."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Child:
    """One worker process, restartable under the same name (so it finds its own pending entries)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    kills: int = 0
    started_at: float = 0.0
    exit_codes: list[int] = field(default_factory=list)
    log_mark: int = 0  # the log's size when the process was (re)started
    cpu_s: float = 0.0  # user + system CPU of its processes that have exited (every restart)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.log_mark = log.tell()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.started_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self._reap(self.proc.poll) is None

    @property
    def up(self) -> bool:
        """Alive and past its start-up: it has logged since it was (re)started (its "starting" line
        comes after the imports, which take seconds on a loaded machine)."""
        try:
            return self.alive and self.log_path.stat().st_size > self.log_mark
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no chance to ack or flush, as in a crash or an OOM kill."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self._reap(self.proc.wait)
            self.kills += 1

    def restart_if_dead(self) -> bool:
        """Restart a process that exited (killed or crashed); the orchestrator's job in production."""
        if self.proc is None or self.alive:
            return False
        self.exit_codes.append(int(self.proc.returncode))
        self.restarts += 1
        self.start()
        return True

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait (the worker drains in-flight work and exits 0); SIGKILL if it hangs."""
        proc = self.proc
        if proc is None:
            return None
        if self.alive:
            proc.send_signal(signal.SIGTERM)
            try:
                return self._reap(lambda: proc.wait(timeout_s))
            except subprocess.TimeoutExpired:
                proc.kill()
                return self._reap(proc.wait)
        return proc.returncode

    def startup_cpu_s(self) -> float:
        """The CPU its processes had used when ready (their "worker ready" log lines; 0 if none)."""
        total = 0.0
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            for line in log:
                if b'"worker ready"' in line:
                    with contextlib.suppress(ValueError, TypeError):
                        total += float(json.loads(line)["startup_cpu_s"])
        return total

    def _reap(self, wait: Callable[[], int | None]) -> int | None:
        """Call `wait` (which may reap the process) and add the CPU it had used to `cpu_s`: the
        growth of RUSAGE_CHILDREN across the call (the demo reaps its children one at a time)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        code = wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_s += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return code


def child_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFILL_TEST_")}
    env.update(base)
    env.update(extra)
    return env


def cpu_by_kind(children: list[Child], *, startup: bool = False) -> dict[str, float]:
    """CPU seconds of each kind of worker (the name before its "-"), summed over its replicas and
    restarts: all of it once they are stopped, or with `startup` the part used before ready."""
    kinds = ("ingester", "backfiller", "indexer")
    return {
        kind: round(
            sum(c.startup_cpu_s() if startup else c.cpu_s for c in children if c.name.split("-")[0] == kind),
            3,
        )
        for kind in kinds
    }
