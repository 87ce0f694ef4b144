"""`campaign soak`: a read-only watch after (or during) a campaign, ending in go or no-go.

For `--for` seconds it samples, every `--every` seconds, the pipeline's live lag and dead-letter
and outcome counts, and compares them with the baseline `apply` stored before the campaign's
first job. Then it fetches a random sample of the campaign's repos from their PDS and compares
their records (collection, rkey, cid) with the live rows PostgreSQL holds for them. It writes
soak.md and exits 0 for go, 1 for no-go, with the reasons. It changes nothing.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from atp import AtpError
from workers.campaign import gate
from workers.campaign.discover import network
from workers.campaign.state import Campaign
from workers.indexer.collections import live_records_sql


@dataclass(frozen=True)
class SoakOptions:
    duration_s: float
    interval_s: float
    sample: int
    max_lag_growth_s: float
    max_dlq_growth: int = 0


@dataclass(frozen=True)
class RepoCheck:
    """One sampled repo: its records at the PDS against PostgreSQL's live rows."""

    did: str
    pds: int
    indexed: int
    missing: int
    extra: int
    different: int
    error: str = ""

    @property
    def matches(self) -> bool:
        return not self.error and self.missing == self.extra == self.different == 0


async def sample_health(ctx: Any, options: SoakOptions) -> list[dict[str, Any]]:
    """Health figures every interval for the soak's duration (at least two: start and end)."""
    samples = [await gate.health(ctx.store.redis, ctx.store.keys)]
    deadline = time.monotonic() + options.duration_s
    while (left := deadline - time.monotonic()) > 0:
        await anyio.sleep(min(options.interval_s, left))
        samples.append(await gate.health(ctx.store.redis, ctx.store.keys))
    return samples


async def check_repo(net: Any, conn: Any, did: str) -> RepoCheck:
    try:
        _, at_pds, _ = await net.fetch_records(did)
    except (AtpError, OSError, ValueError) as exc:
        return RepoCheck(did, 0, 0, 0, 0, 0, error=f"{type(exc).__name__}: {exc}"[:300])
    rows = await conn.fetch(f"SELECT collection, rkey, cid FROM ({live_records_sql()}) r WHERE did = $1", did)
    indexed = {(c, k): cid for c, k, cid in rows}
    different = sum(1 for key, cid in at_pds.items() if key in indexed and indexed[key] != cid)
    return RepoCheck(
        did,
        pds=len(at_pds),
        indexed=len(indexed),
        missing=len(at_pds.keys() - indexed.keys()),
        extra=len(indexed.keys() - at_pds.keys()),
        different=different,
    )


def verdict(
    campaign: Campaign, samples: list[dict[str, Any]], checks: list[RepoCheck], options: SoakOptions
) -> list[str]:
    """The reasons for no-go (none: go)."""
    reasons: list[str] = []
    base = campaign.baseline
    lags = [s["live_lag_s"] for s in samples if s["live_lag_s"] is not None]
    base_lag = base.get("live_lag_s") or 0.0
    if lags and max(lags) - base_lag > options.max_lag_growth_s:
        reasons.append(
            f"live lag grew to {max(lags):.1f} s (baseline {base_lag:.1f} s, "
            f"allowed +{options.max_lag_growth_s:g} s)"
        )
    for key in (k for k in samples[0] if k.startswith("dlq_")):
        grown = samples[-1][key] - samples[0][key]
        if grown > options.max_dlq_growth:
            reasons.append(f"{key.removeprefix('dlq_')}:dlq grew by {grown} during the soak")
    reasons += [
        f"{c.did}: " + (c.error or f"{c.missing} missing, {c.extra} extra, {c.different} with another cid")
        for c in checks
        if not c.matches
    ]
    return reasons


def report(
    campaign: Campaign,
    samples: list[dict[str, Any]],
    checks: list[RepoCheck],
    reasons: list[str],
    seed: int,
) -> str:
    base = campaign.baseline
    matched = sum(c.matches for c in checks)
    lines = [
        f"# Soak of campaign `{campaign.name}`: {'NO-GO' if reasons else 'GO'}",
        "",
        f"- state {campaign.state}; {len(samples)} health samples over "
        f"{samples[-1]['at'] - samples[0]['at']:.1f} s; sample seed {seed}",
        f"- repos matching their PDS: {matched}/{len(checks)} ({matched / len(checks):.1%})"
        if checks
        else "- no repos sampled",
        "",
        "| figure | baseline (before apply) | soak start | soak end |",
        "|---|---|---|---|",
        *(
            f"| {key} | {base.get(key, 'n/a')} | {samples[0][key]} | {samples[-1][key]} |"
            for key in samples[0]
            if key != "at"
        ),
        "",
        "| repo | records at PDS | indexed | missing | extra | other cid | error |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {c.did} | {c.pds} | {c.indexed} | {c.missing} | {c.extra} | {c.different} | {c.error} |"
            for c in checks
        ),
        "",
        "## Verdict",
        "",
        *(
            [f"- {r}" for r in reasons]
            or ["- go: no regression against the baseline, every sampled repo matches"]
        ),
    ]
    return "\n".join(lines) + "\n"


async def soak(ctx: Any, campaign: Campaign, options: SoakOptions, out: Path) -> int:
    samples = await sample_health(ctx, options)
    seed = int.from_bytes(os.urandom(4), "big")
    repos = await ctx.store.repos(campaign.name, 0, campaign.cursor)
    chosen = random.Random(seed).sample(repos, min(options.sample, len(repos)))
    async with network(ctx.config) as net:
        checks = [await check_repo(net, ctx.conn, r["did"]) for r in chosen]
    reasons = verdict(campaign, samples, checks, options)
    path = _write(out / "soak.md", report(campaign, samples, checks, reasons, seed))
    print(f"campaign {campaign.name}: soak {'NO-GO' if reasons else 'GO'} (wrote {path})")
    for reason in reasons:
        print(f"  {reason}")
    return 1 if reasons else 0


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
