"""`campaign rollback`: restore the rows an --undo campaign changed (not built yet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workers.campaign.state import Campaign, CampaignError, CampaignStore


async def rollback(store: CampaignStore, conn: Any, campaign: Campaign, out: Path | None) -> int:
    raise CampaignError(f"campaign {campaign.name!r}: rollback is not built yet")
