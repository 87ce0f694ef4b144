"""Run a command in its own process group and never leave any of its descendants behind.

`subprocess.run(..., timeout=)` kills only the process it started: when the demo times out, its
devnet and worker children would survive it (and keep ports, CPU and the servers busy). Here the
command starts a new session, so it and everything it spawns share one process group; whatever
way the run ends (exit, timeout, a failing assertion, pytest-timeout's alarm), the whole group
is SIGKILLed and the survivors counted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`, from /proc."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after it.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def kill_group(pgid: int, *, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL every process of the group and wait until none is left (a signal is delivered
    asynchronously); returns the pids that were alive when it was sent."""
    alive = group_members(pgid)
    if alive:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling for the kernel to finish the kill, not a fixed wait
    return alive


class GroupRun:
    """`with GroupRun(cmd, env=...) as run:` ... `run.communicate(timeout)`; the group dies on exit."""

    def __init__(self, cmd: list[str], *, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own session and process group, pgid == pid
        )
        self.pgid = self.proc.pid
        self.leftovers: list[int] = []  # descendants still alive when the command itself had ended

    def __enter__(self) -> GroupRun:
        return self

    def __exit__(self, *exc: object) -> None:
        ended = self.proc.poll() is not None
        alive = kill_group(self.pgid)
        if ended:
            self.leftovers = alive
        try:
            self.proc.communicate(timeout=30)  # reap it and close the pipes
        except subprocess.TimeoutExpired:
            pass
