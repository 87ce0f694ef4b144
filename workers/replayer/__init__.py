"""The replayer: makes Captain's Log indexing into Elasticsearch eventually consistent.

`scan` enqueues files not yet indexed into the `captains_log` stream; `index` replicas bulk-index
them; results flow back through `captains_log_results` into a SQLite ledger.
"""
