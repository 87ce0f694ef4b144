"""`campaign soak` (not built yet)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.campaign.state import Campaign, CampaignError


@dataclass(frozen=True)
class SoakOptions:
    duration_s: float
    interval_s: float
    sample: int
    max_lag_growth_s: float


async def soak(ctx: Any, campaign: Campaign, options: SoakOptions, out: Path) -> int:
    raise CampaignError(f"campaign {campaign.name!r}: soak is not built yet")
