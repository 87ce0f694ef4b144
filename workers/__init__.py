"""Worker processes (ingester, backfiller, indexer, replayer) and the `streamfill` CLI."""
