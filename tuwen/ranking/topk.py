"""The top-k primitive and the one softmax, shared by every ranking of tuwen.

Ranking order everywhere: score descending, ties broken by column ascending, and a
gallery's columns are in id order, so a result never depends on shard layout, block size
or thread timing. Numpy only: the search job must not pay torch's import.
"""

from __future__ import annotations

import numpy as np


def ranked_top(scores: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Give (row, column, score, rank from 0) of each row's `keep` best scores, rows in order,
    each row's best first and ties broken by column (the columns are in id order)."""
    rows, cols = top_candidates(scores, keep)
    values = scores[rows, cols]
    by_rank = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[by_rank], cols[by_rank], values[by_rank]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    chosen = rank < keep
    return rows[chosen], cols[chosen], values[chosen], rank[chosen]


def top_candidates(scores: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Give (row, column) of each row's `keep` highest scores and of everything tied with the
    `keep`-th, sorted by row: the exact top-k once ties are broken by id."""
    count = scores.shape[1]
    if count <= keep:
        every_row, every_column = np.indices(scores.shape)
        return every_row.ravel(), every_column.ravel()
    # The top keep + 1 per row: column 0 holds the (keep + 1)-th score, the rest the top keep.
    top = np.argpartition(scores, count - keep - 1, axis=1)[:, count - keep - 1 :]
    values = np.take_along_axis(scores, top, axis=1)
    kth = values[:, 1:].min(axis=1)
    rows = np.repeat(np.arange(len(scores)), keep)
    cols = top[:, 1:].ravel()
    tied = np.flatnonzero(values[:, 0] >= kth)
    if len(tied):
        # Rare: more scores equal the k-th than fit; take every one of them for those rows.
        tie_rows, tie_cols = np.nonzero(scores[tied] >= kth[tied, None])
        keep_rows = ~np.isin(rows, tied)
        rows = np.concatenate([rows[keep_rows], tied[tie_rows]])
        cols = np.concatenate([cols[keep_rows], tie_cols])
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]


def row_logsumexp(scores: np.ndarray, scale: float) -> np.ndarray:
    """Give each row's log-sum-exp of `scale * scores` (float64): the log of a softmax's
    normaliser over the row. exp runs in the scores' own precision (float32 for a shard's
    cosines: logits are at most 2 * scale apart after the shift by the row's peak, so
    nothing overflows) and the sums in float64, much faster than float64 throughout for an
    error of ~1e-7 in the log."""
    peak = scores.max(axis=1, keepdims=True)
    shifted = np.exp((scores - peak) * scores.dtype.type(scale))
    return peak[:, 0].astype(np.float64) * scale + np.log(shifted.sum(axis=1, dtype=np.float64))


def softmax(scores: np.ndarray, logsumexp: np.ndarray, scale: float) -> np.ndarray:
    """Give the softmax probability of `scale * scores` whose normaliser's log is `logsumexp`
    (`row_logsumexp` of each score's row, or a merge of several such)."""
    return np.exp(scale * np.asarray(scores, dtype=np.float64) - logsumexp)


def merged_logsumexp(parts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Give the log-sum-exp of each group's parts (the per-shard `row_logsumexp`s of a query):
    the normaliser's log over the whole gallery. `groups` numbers each part's row (0..n-1)."""
    peak = np.full(int(groups.max()) + 1 if len(groups) else 0, -np.inf)
    np.maximum.at(peak, groups, parts)
    total = np.zeros(len(peak))
    np.add.at(total, groups, np.exp(parts - peak[groups]))
    return np.log(total) + peak
