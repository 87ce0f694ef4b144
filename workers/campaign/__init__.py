"""Backfill campaigns: plan, gated and throttled apply, soak, rollback (`streamfill campaign`)."""

from workers.campaign.state import Campaign, CampaignError, CampaignStore

__all__ = ["Campaign", "CampaignError", "CampaignStore"]
