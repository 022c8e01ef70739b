"""Deterministic splits of ids, by hash (torch-free: the validation task and training share it)."""

from __future__ import annotations

import hashlib


def id_bucket(item_id: str, salt: str = "") -> float:
    """Give a stable number in [0, 1) for an id: the same on every machine and run."""
    return int(hashlib.sha256((salt + item_id).encode("utf-8")).hexdigest()[:8], 16) / 2**32


def is_validation(item_id: str, fraction: float) -> bool:
    """Tell whether a pair belongs to the validation split: a stable hash of its id, not luck."""
    return id_bucket(item_id) < fraction
