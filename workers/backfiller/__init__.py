"""The repo backfiller: repo_backfill -> getRepo -> verified records -> firehose_backfill."""

from workers.backfiller.config import BackfillerConfig
from workers.backfiller.handler import BackfillHandler
from workers.backfiller.hosts import HostBusy, HostLimiter
from workers.backfiller.worker import Backfiller, build_backfiller

__all__ = ["BackfillHandler", "Backfiller", "BackfillerConfig", "HostBusy", "HostLimiter", "build_backfiller"]
