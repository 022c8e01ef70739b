"""Keyword and meaning in one ranking: reciprocal-rank fusion of ranked lists.

A photo library's text query is matched two ways: against the words printed in each photo
(BM25 of the text OCR read, `tuwen.text.lexical`) and against what each photo shows (the
ranking model's cosine). Their scores are not on one scale — a BM25 score has no bound and
a cosine of a caption to its best image is ~0.3 — so they are combined by rank, as
reciprocal-rank fusion does (Cormack, Clarke and Büttcher, SIGIR 2009): an item's score is
the sum over the lists that hold it of 1 / (RANK_CONSTANT + its rank in that list, from 1).

Only what a list found is in it: a keyword list holds the items that share a character or
pair of characters with the query (BM25 > 0), a meaning list its best `depth` items. A hit's
parts are each list's share of its score, and `found_by` its rank in each list that found it.
Ties break by column (the gallery's id order), as every ranking of the run does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuwen.ranking.topk import ranked_top

# The constant of the original paper; it damps the weight of the very first ranks, so that
# one list's first item does not outweigh an item near the top of every list.
RANK_CONSTANT = 60
# How far down each list is read: a hit ranked below this in a list gets nothing from it.
DEPTH = 100


@dataclass(frozen=True)
class RankedList:
    """One list's items, best first: gallery columns and the scores they were ranked by."""

    name: str
    columns: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class FusedHit:
    """An item of the fused ranking: its rank (from 1), column, score, each list's share of the
    score (they add up to it) and its rank in each list that found it."""

    rank: int
    column: int
    score: float
    parts: tuple[tuple[str, float], ...]
    found_by: tuple[tuple[str, int], ...]


def ranked_list(
    name: str, scores: np.ndarray, columns: np.ndarray, depth: int, matched_only: bool
) -> RankedList:
    """Give the best `depth` of `columns` by `scores` (one per column), ties by column;
    `matched_only`: leave out the items that scored 0 (a keyword list's non-matches)."""
    scores = np.asarray(scores, dtype=np.float64)
    columns = np.asarray(columns, dtype=np.int64)
    if matched_only:
        kept = scores > 0
        scores, columns = scores[kept], columns[kept]
    order = np.argsort(columns, kind="stable")  # ranked_top breaks ties by position
    scores, columns = scores[order], columns[order]
    keep = min(depth, len(columns))
    if keep == 0:
        return RankedList(name, columns[:0], scores[:0])
    _, positions, best, _ = ranked_top(scores[None, :], keep)
    return RankedList(name, columns[positions], np.asarray(best, dtype=np.float64))


def reciprocal_rank_fusion(lists: list[RankedList], k: int, constant: int = RANK_CONSTANT) -> list[FusedHit]:
    """Give the top-`k` items of the lists fused by reciprocal rank; parts in the lists' order."""
    shares: dict[int, dict[str, float]] = {}
    ranks: dict[int, dict[str, int]] = {}
    for ranked in lists:
        for position, column in enumerate(ranked.columns.tolist()):
            shares.setdefault(column, {})[ranked.name] = 1.0 / (constant + position + 1)
            ranks.setdefault(column, {})[ranked.name] = position + 1
    totals = {column: sum(parts.values()) for column, parts in shares.items()}
    best = sorted(totals, key=lambda column: (-totals[column], column))[:k]
    names = [ranked.name for ranked in lists]
    return [
        FusedHit(
            rank,
            column,
            totals[column],
            tuple((name, shares[column][name]) for name in names if name in shares[column]),
            tuple((name, ranks[column][name]) for name in names if name in ranks[column]),
        )
        for rank, column in enumerate(best, start=1)
    ]
