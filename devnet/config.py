"""Frozen configuration of a devnet: network shape, determinism, activity and faults."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DevnetConfig", "FaultConfig", "RepoSelector"]

# A repo named by DID or by its index in generation order (DIDs are only known after generation).
RepoSelector = str | int

# 2025-01-01T00:00:00Z: the simulated clock starts here so that runs are reproducible.
DEFAULT_START_US = 1_735_689_600_000_000


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Faults to inject from the start; every one can also be toggled at runtime via `Faults`."""

    # Relay listRepos pages (0-based index for the requested limit) or raw cursors answering 500.
    fail_list_pages: frozenset[int] = frozenset()
    fail_list_cursors: frozenset[str] = frozenset()
    # How many times a failing page fails before it recovers; 0 means it never recovers.
    fail_list_times: int = 0
    # PDS indexes whose getRepo answers 429 on `rate_limit_fraction` of calls.
    rate_limit_pds: frozenset[int] = frozenset()
    rate_limit_fraction: float = 0.5
    retry_after_s: int = 1
    # Slow: a pause before each streamed chunk. Hang: headers and a first chunk, then nothing.
    slow_repos: frozenset[RepoSelector] = frozenset()
    slow_pds: frozenset[int] = frozenset()
    slow_delay_s: float = 0.2
    hang_repos: frozenset[RepoSelector] = frozenset()
    hang_pds: frozenset[int] = frozenset()
    truncate_repos: frozenset[RepoSelector] = frozenset()
    bad_sig_repos: frozenset[RepoSelector] = frozenset()
    # Account states chosen deterministically at generation (counts of repos).
    takendown: int = 0
    deactivated: int = 0
    missing: int = 0  # listed by the relay as active, unknown to the PDS (RepoNotFound)
    # Close every firehose/labeler websocket connection after this many frames (0 = never).
    drop_ws_every: int = 0
    # PDS listRepos calls (pds index, cursor; "" for the first page) answering 500, every time.
    fail_pds_list_cursors: frozenset[tuple[int, str]] = frozenset()
    # PDS indexes the relay's listHosts leaves out (hosts it has not crawled yet).
    hidden_hosts: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class DevnetConfig:
    """Everything that shapes a devnet; the same config and seed give the same network."""

    repos: int = 50
    pds_hosts: int = 2
    seed: int = 0
    # Relay port; PLC, labeler and PDS i listen on port+1, port+2, port+3+i. 0 = ephemeral ports.
    port: int = 0
    host: str = "127.0.0.1"
    # Events per second of live activity; 0 = only when driven with `Devnet.step()`.
    firehose_rate: float = 0.0
    truth_path: str | None = None
    # One repo this large is added when repos >= huge_repo_min_repos (None = 100k in that case).
    huge_repo_records: int | None = None
    huge_repo_min_repos: int = 400
    # Most repos hold a few to a few hundred records; the Pareto tail is capped here.
    max_small_repo_records: int = 3000
    # Repos above this size are left out of live activity: each commit rebuilds the repo's MST.
    live_max_records: int = 5000
    event_log_size: int = 10_000
    label_log_size: int = 10_000
    initial_labels: int = 20
    start_us: int = DEFAULT_START_US
    # Like the real relay, leave this fraction of the accounts (chosen by the seed) out of the
    # relay's listRepos: only their PDS's listRepos (found through listHosts) lists them.
    relay_omit_fraction: float = 0.05
    faults: FaultConfig = field(default_factory=FaultConfig)

    def resolved_huge_records(self) -> int:
        """Size of the huge repo, or 0 when this network has none."""
        if self.huge_repo_records is not None:
            return self.huge_repo_records
        return 100_000 if self.repos >= self.huge_repo_min_repos else 0
