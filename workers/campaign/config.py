"""What `streamfill campaign ...` reads: the servers, where to discover repos, and the SSRF switch."""

from __future__ import annotations

from dataclasses import dataclass

from streams import StreamNames
from workers.settings import (
    HOSTS,
    HTTP_URL,
    POSTGRES_URL,
    Setting,
    Spec,
    allow_private_hosts_setting,
    choice,
    partition_settings,
    redis_settings,
    throttle_rule,
    throttle_settings,
)

# Where repos are found, as the ingester's INGESTER_DISCOVERY.
DISCOVERY = ("both", "relay", "hosts")
# The pipeline a campaign feeds and watches (the workers' defaults).
REPO_STREAM = StreamNames.REPO_BACKFILL
REPO_GROUP = "repo_backfill_group"
FIREHOSE_STREAM = StreamNames.FIREHOSE_BACKFILL
LIVE_STREAM = StreamNames.FIREHOSE_LIVE
FIREHOSE_GROUP = "firehose_group"


@dataclass(frozen=True)
class CampaignConfig:
    """Servers and discovery settings of the campaign commands."""

    database_url: str | None = None
    redis_url: str | None = None
    prefix: str = ""
    relay_hosts: tuple[str, ...] = ()
    discovery: str = "both"
    plc_url: str = "https://plc.directory"
    allow_private_hosts: bool = False
    partitions: int = 1
    throttle: bool = True
    throttle_live_lag_s: float = 2.0
    throttle_resume_lag_s: float = 1.0


SPEC: Spec[CampaignConfig] = Spec(
    "campaign",
    CampaignConfig,
    (
        Setting(
            "database_url",
            "DATABASE_URL",
            POSTGRES_URL,
            "PostgreSQL the indexer writes (gates, `--scope stale`, soak and rollback read it)",
            optional=True,
            secret=True,
            shown_default="none: an embedded PostgreSQL for development",
        ),
        *redis_settings(),
        Setting(
            "relay_hosts",
            "CAMPAIGN_RELAY_HOSTS",
            HOSTS,
            "relays whose listRepos `--scope all` and `--scope stale` page, comma-separated",
        ),
        Setting(
            "discovery",
            "CAMPAIGN_DISCOVERY",
            choice(*DISCOVERY),
            "where `--scope all|stale` finds repos, like INGESTER_DISCOVERY: relay (its listRepos), "
            "hosts (its listHosts, then each PDS's listRepos) or both",
        ),
        Setting("plc_url", "PLC_URL", HTTP_URL, "PLC directory, to find a repo's PDS (plan samples, soak)"),
        allow_private_hosts_setting(),
        *partition_settings(producer=False),
        *throttle_settings(),
    ),
    rules=(throttle_rule(),),
    title="backfill campaigns: `campaign plan|apply|approve|reject|pause|resume|abort|status|soak|rollback`",
)
