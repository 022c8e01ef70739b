"""Data in: ingest (folders and tables to validated manifests), the append-only shard
registry, deterministic splits, fusion's held-out task, and the embedded demo."""
