"""The indexer: applies firehose, backfill and label events from Redis streams to PostgreSQL."""

from workers.indexer.handler import IndexerHandler, IndexerStats
from workers.indexer.migrate import migrate
from workers.indexer.store import ApplyStats, apply

__all__ = ["ApplyStats", "IndexerHandler", "IndexerStats", "apply", "migrate"]
