"""Every Redis key name the runtime and the workers use is built here, and nowhere else."""

from __future__ import annotations

import socket
from dataclasses import dataclass

# Cursor value a listing source writes when it has paged to the end (rsky convention).
CURSOR_DONE = "!ingester-done"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under an optional prefix (tests and multi-tenant deployments use one)."""

    prefix: str = ""

    def _k(self, name: str) -> str:
        return f"{self.prefix}:{name}" if self.prefix else name

    def stream(self, name: str) -> str:
        return self._k(name)

    def dlq(self, stream_key: str) -> str:
        return f"{stream_key}:dlq"

    def cursor(self, stream: str, host: str) -> str:
        return self._k(f"{stream}:cursor:{host}")

    def last_cursor(self, stream: str, host: str) -> str:
        """The last real listing cursor, kept after the cursor became CURSOR_DONE (for re-checks)."""
        return self._k(f"{stream}:cursor:{host}:last")

    def ledger(self, stream: str, host: str) -> str:
        """Skipped source ranges (skip-ahead), one stream entry per range."""
        return self._k(f"{stream}:skipped:{host}")

    def outcomes(self, stream: str) -> str:
        """Permanent, expected outcomes (e.g. repo taken down) an operator can list."""
        return self._k(f"{stream}:outcomes")

    def audit(self) -> str:
        return self._k("audit")

    def cache(self, kind: str, item: str) -> str:
        return self._k(f"cache:{kind}:{item}")

    def all_streams_pattern(self) -> str:
        return self._k("*")


def default_consumer_name(worker: str) -> str:
    """`<worker>-<hostname>`: stable across restarts, so a replica finds its own pending entries."""
    return f"{worker}-{socket.gethostname()}"
