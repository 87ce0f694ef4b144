"""Runtime fault switches: what each server should break, and counters of what it did break.

`Faults` starts from a `FaultConfig` (repo selectors resolved to DIDs) and every attribute can be
changed while the devnet runs (`net.faults.hang_dids.add(did)`). Decisions are deterministic: the
rate limiter fails call n of a PDS when floor(n * fraction) grows, not on a random draw.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from devnet.config import FaultConfig, RepoSelector

__all__ = ["Faults", "resolve_repos"]


def resolve_repos(selectors: Iterable[RepoSelector], dids: Sequence[str]) -> set[str]:
    """Turn repo indexes (ints or digit strings) and DIDs into DIDs."""
    out: set[str] = set()
    for selector in selectors:
        if isinstance(selector, int) or str(selector).isdigit():
            index = int(selector)
            if not 0 <= index < len(dids):
                raise ValueError(f"repo index {index} out of range (0..{len(dids) - 1})")
            out.add(dids[index])
        else:
            out.add(str(selector))
    return out


class Faults:
    """Mutable fault switches consulted by the relay, PDS and stream handlers."""

    def __init__(self, config: FaultConfig, dids: Sequence[str]) -> None:
        self.fail_list_pages: set[int] = set(config.fail_list_pages)
        self.fail_list_cursors: set[str] = set(config.fail_list_cursors)
        self.fail_list_times = config.fail_list_times
        self.rate_limit_pds: set[int] = set(config.rate_limit_pds)
        self.rate_limit_fraction = config.rate_limit_fraction
        self.retry_after_s = config.retry_after_s
        self.slow_dids = resolve_repos(config.slow_repos, dids)
        self.slow_pds: set[int] = set(config.slow_pds)
        self.slow_delay_s = config.slow_delay_s
        self.hang_dids = resolve_repos(config.hang_repos, dids)
        self.hang_pds: set[int] = set(config.hang_pds)
        self.truncate_dids = resolve_repos(config.truncate_repos, dids)
        self.bad_sig_dids = resolve_repos(config.bad_sig_repos, dids)
        self.drop_ws_every = config.drop_ws_every
        self.fail_pds_list_cursors: set[tuple[int, str]] = set(config.fail_pds_list_cursors)
        self.hidden_hosts: set[int] = set(config.hidden_hosts)
        # Raw items the relay's listHosts appends to its hosts (dead hosts, malformed items).
        self.extra_hosts: list[object] = []
        # The relay's listHosts answers 503 while set.
        self.fail_list_hosts = False
        self.injected: Counter[str] = Counter()
        self._list_failures: Counter[str] = Counter()
        self._getrepo_calls: Counter[int] = Counter()

    def list_page_fails(self, page: int, cursor: str | None) -> bool:
        """Whether this listRepos page answers 500 now (counts toward `fail_list_times`)."""
        if page in self.fail_list_pages:
            key = f"page:{page}"
        elif cursor is not None and cursor in self.fail_list_cursors:
            key = f"cursor:{cursor}"
        else:
            return False
        if self.fail_list_times and self._list_failures[key] >= self.fail_list_times:
            return False
        self._list_failures[key] += 1
        self.injected["list_500"] += 1
        return True

    def pds_list_fails(self, pds: int, cursor: str | None) -> bool:
        """Whether this PDS listRepos call answers 500 now (it always does while configured)."""
        if (pds, cursor or "") not in self.fail_pds_list_cursors:
            return False
        self.injected["pds_list_500"] += 1
        return True

    def rate_limited(self, pds: int) -> bool:
        """Whether this getRepo call on PDS `pds` answers 429."""
        if pds not in self.rate_limit_pds:
            return False
        n = self._getrepo_calls[pds]
        self._getrepo_calls[pds] = n + 1
        # Deterministic spread: exactly floor(calls * fraction) of the calls are limited.
        hit = math.floor((n + 1) * self.rate_limit_fraction) > math.floor(n * self.rate_limit_fraction)
        if hit:
            self.injected["getrepo_429"] += 1
        return hit

    def slow(self, did: str, pds: int) -> bool:
        """Whether getRepo of this repo is streamed slowly."""
        return did in self.slow_dids or pds in self.slow_pds

    def hangs(self, did: str, pds: int) -> bool:
        """Whether getRepo of this repo stalls after the first chunk."""
        return did in self.hang_dids or pds in self.hang_pds

    def note(self, name: str) -> None:
        """Count a fault that a server injected."""
        self.injected[name] += 1

    def clear(self) -> None:
        """Switch every fault off (account states are not faults and stay as they are)."""
        for name in (
            "fail_list_pages",
            "fail_list_cursors",
            "rate_limit_pds",
            "slow_dids",
            "slow_pds",
            "hang_dids",
            "hang_pds",
            "truncate_dids",
            "bad_sig_dids",
            "fail_pds_list_cursors",
            "hidden_hosts",
            "extra_hosts",
        ):
            getattr(self, name).clear()
        self.drop_ws_every = 0
        self.fail_list_hosts = False

    def snapshot(self) -> dict[str, int]:
        """Counters of injected faults."""
        return dict(self.injected)
