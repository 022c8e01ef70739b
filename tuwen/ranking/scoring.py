"""One ranking for every place that ranks: the result tables (`tuwen.ranking.exact` for one
channel, `tuwen.ranking.fusion` for a recipe), `tuwen serve` and `tuwen search`.

A `Ranking` says how a gallery is ranked for a kind of query:
- by one channel's cosine alone (float32, exactly as a shard's search scores it), or
- by a fusion recipe: the float64 weighted sum of channel scores (`fused`), and, when the
  recipe re-ranks, the query-set shift `final = fused - T * log sum_q exp(fused[q, g] / T)`.

`rank_block` ranks a block of queries by a `Ranking`, and every ranking goes through it:
a shard's search, a fused table's block of queries, and the server's single query.

The shift's sum runs over a set of queries for each gallery item. For a result table that is
the task's queries; for a single query it is the run's `QueryBank`, the table's own per-item
log-sum-exp, with the new query added to it (QB-Norm's query bank). A query that is one of
the task's own is already in the bank, so it gets exactly its row of the table.

A hit's `parts` add up to its score: each used channel's weighted score, then `rerank`.
Ties break by gallery column everywhere, and the gallery's columns are in id order.
Numpy only: the search job must not pay torch's import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tuwen.ranking.topk import ranked_top
from tuwen.run.channels import score_column

RERANK = "rerank"


@dataclass(frozen=True)
class FusionRecipe:
    """A weight per channel (0: unused) and the re-ranking temperature (None: no re-ranking)."""

    weights: tuple[tuple[str, float], ...]
    temperature: float | None = None

    @property
    def used(self) -> list[str]:
        """Give the channels with a non-zero weight."""
        return [name for name, weight in self.weights if weight]

    @property
    def label(self) -> str:
        """Give the row label of fusion.csv: the used channels, and `rerank` when re-ranking."""
        return "+".join(self.used + ([RERANK] if self.temperature else []))

    def describe(self) -> dict:
        """Give the recipe as JSON-ready data."""
        return {"weights": dict(self.weights), "temperature": self.temperature}

    @classmethod
    def from_dict(cls, data: dict) -> FusionRecipe:
        """Read a recipe written by `describe`."""
        return cls(tuple((k, float(v)) for k, v in data["weights"].items()), data["temperature"])


def weighted_sum(blocks: dict[str, np.ndarray], recipe: FusionRecipe) -> np.ndarray:
    """Give the recipe's weighted sum of channel score blocks (every used channel present)."""
    total = None
    for name, weight in recipe.weights:
        if weight:
            part = weight * blocks[name]
            total = part if total is None else total + part
    assert total is not None, "a recipe uses at least one channel"
    return total


def reranked(fused: np.ndarray, logsumexp: np.ndarray, temperature: float) -> np.ndarray:
    """Give the final score: the fused score less T x the query set's log-sum-exp of each item."""
    return fused - temperature * logsumexp


def table_row_parts(row: dict, recipe: FusionRecipe) -> list[tuple[str, float]]:
    """Give a result-table row's parts: each used channel's weighted `score_<channel>`, and the
    re-ranking's shift (`score` - `fused`) when the recipe re-ranks."""
    parts = [(name, weight * float(row[score_column(name)])) for name, weight in recipe.weights if weight]
    if recipe.temperature:
        parts.append((RERANK, float(row["score"]) - float(row["fused"])))
    return parts


@dataclass(frozen=True)
class QueryBank:
    """Per gallery item (in the gallery's id order), the log of the sum over a task's queries of
    exp(fused / T): what re-ranking needs of the queries that are not the one being ranked."""

    ids: np.ndarray  # object array of gallery ids, sorted
    logsumexp: np.ndarray  # float64, one per id
    temperature: float

    def for_query(self, fused: np.ndarray, columns: np.ndarray, member: bool) -> np.ndarray:
        """Give the log-sum-exp at `columns` for a query whose fused scores there are `fused`:
        the bank's own for one of its queries, and with the query added for a new one."""
        bank = self.logsumexp[columns]
        return bank if member else np.logaddexp(bank, fused / self.temperature)

    @classmethod
    def from_table(cls, table: pd.DataFrame, temperature: float) -> QueryBank:
        ordered = table.sort_values("target_id", kind="stable")
        return cls(
            ordered["target_id"].to_numpy(dtype=object),
            ordered["logsumexp"].to_numpy(np.float64),
            temperature,
        )


def bank_table(bank: QueryBank | None) -> pd.DataFrame:
    """Give a bank as its Parquet file's table (target_id, logsumexp); empty without re-ranking,
    where a single query needs nothing of the others."""
    ids, lse = (bank.ids, bank.logsumexp) if bank is not None else ([], [])
    return pd.DataFrame(
        {"target_id": pd.Series(ids, dtype=str), "logsumexp": pd.Series(lse, dtype=np.float64)}
    )


def read_bank(path: str | os.PathLike, temperature: float) -> QueryBank:
    """Read a bank written from `bank_table`."""
    return QueryBank.from_table(pd.read_parquet(path), temperature)


@dataclass(frozen=True)
class Ranking:
    """How a gallery is ranked for a kind of query: `channel`'s cosine alone (recipe None), or a
    fusion recipe whose re-ranking (if any) uses `bank`; `channel` gives each hit's cosine."""

    channel: str
    recipe: FusionRecipe | None = None
    bank: QueryBank | None = None

    @property
    def channels(self) -> list[str]:
        """Give every channel a query is scored by: the ranking channel, then the recipe's."""
        used = self.recipe.used if self.recipe else []
        return list(dict.fromkeys([self.channel, *used]))

    @property
    def label(self) -> str:
        return self.recipe.label if self.recipe else self.channel

    def missing(self) -> list[str]:
        """Give what of the ranking cannot be applied: re-ranking without its query bank."""
        if self.recipe and self.recipe.temperature and self.bank is None:
            return [f"{RERANK}: the run kept no query bank for re-ranking (rerun its search)"]
        return []


@dataclass(frozen=True)
class RankedBlock:
    """A block of queries ranked: (row, column, score, rank from 0) of each hit, rows in order and
    each row's best first, with the fused score of every pair (None: one channel ranked)."""

    rows: np.ndarray
    columns: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray
    fused: np.ndarray | None
    reranked: bool = False  # the final score is the fused one shifted by the re-ranking

    def parts(
        self, blocks: dict[str, np.ndarray], ranking: Ranking, hit: int
    ) -> tuple[tuple[str, float], ...]:
        """Give a hit's parts: each used channel's weighted score, then the re-ranking's shift."""
        if ranking.recipe is None or self.fused is None:
            return ()
        row, column = self.rows[hit], self.columns[hit]
        parts = tuple(
            (name, float(weight * blocks[name][row, column]))
            for name, weight in ranking.recipe.weights
            if weight
        )
        if self.reranked:
            parts += ((RERANK, float(self.scores[hit] - self.fused[row, column])),)
        return parts


def rank_block(
    blocks: dict[str, np.ndarray],
    ranking: Ranking,
    keep: int,
    rerank: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[RankedBlock, np.ndarray]:
    """Give a block of queries' top-`keep` by `ranking`, and the final score of every pair.

    `blocks`: each of `ranking.channels`' scores of the block's queries (rows) at the gallery
    columns scored (in id order). `rerank(fused)` gives the re-ranking's log-sum-exp of each
    pair (a task's query groups, or the query bank), when the recipe re-ranks.
    """
    recipe = ranking.recipe
    fused = None
    shifted = False
    if recipe is None:
        final = blocks[ranking.channel]
    else:
        fused = np.asarray(weighted_sum(blocks, recipe), dtype=np.float64)
        final = fused
        if recipe.temperature and rerank is not None:
            final = reranked(fused, rerank(fused), recipe.temperature)
            shifted = True
    rows, columns, scores, ranks = ranked_top(final, keep)
    return RankedBlock(rows, columns, scores, ranks, fused, shifted), final


@dataclass(frozen=True)
class Hit:
    """One query's ranked item: its rank, gallery column, score, ranking channel's cosine, parts."""

    rank: int  # from 1
    column: int  # the gallery row
    score: float
    cosine: float  # the ranking channel's
    parts: tuple[tuple[str, float], ...]  # empty when one channel's cosine ranks
    found_by: tuple[tuple[str, int], ...] = ()  # its rank in each list a fused-by-rank hit was in


def cosines(gallery: np.ndarray, query: np.ndarray, fused: bool) -> np.ndarray:
    """Give a channel's cosines of one query with gallery rows: float32 as a shard's search
    scores them, or float64 as fusion scores a block."""
    if fused:
        return gallery.astype(np.float64) @ query.astype(np.float64)
    return (query.astype(np.float32)[None, :] @ gallery.T)[0]


def rank_query(
    blocks: dict[str, np.ndarray],
    ranking: Ranking,
    k: int,
    columns: np.ndarray | None = None,
    member: bool = False,
) -> list[Hit]:
    """Give one query's top-`k` by `ranking` (`rank_block` over a block of one row).

    `blocks`: each of `ranking.channels`' scores of the query at `columns` (the gallery rows
    scored, in increasing order; None: every row). `member`: the query is one of the bank's
    own (a task's query), so its re-ranking is the table's.
    """
    first = blocks[ranking.channel]
    columns = np.arange(len(first)) if columns is None else np.asarray(columns)
    keep = min(k, len(columns))
    if keep == 0:
        return []
    rows = {name: np.asarray(block)[None, :] for name, block in blocks.items()}
    bank = ranking.bank

    def rerank(fused: np.ndarray) -> np.ndarray:
        assert bank is not None
        return bank.for_query(fused[0], columns, member)[None, :]

    ranked, _ = rank_block(rows, ranking, keep, rerank if bank is not None else None)
    return [
        Hit(
            int(ranked.ranks[hit]) + 1,
            int(columns[ranked.columns[hit]]),
            float(ranked.scores[hit]),
            float(first[ranked.columns[hit]]),
            ranked.parts(rows, ranking, hit),
        )
        for hit in range(len(ranked.rows))
    ]
