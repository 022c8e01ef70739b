"""A fused task's ranking: several channels' scores of every query and gallery item, combined
by a fusion recipe and re-ranked with the whole query set (its tuning on validation is
tuwen.ranking.tuning's).

For one task (queries x gallery), each channel gives a score per pair:
- `clip:<model>` (and `clip:<model>:base`): the cosine of that model's embeddings;
- `text:<encoder>`: the cosine of a sentence encoder's embeddings of the two texts;
- `ocr`: BM25 of the query's text against the gallery item's text (caption vs the text
  read in the image), divided by the query's best score, so it lies in [0, 1] for every query.

A recipe fuses them as a weighted sum, `fused = sum(w_c * score_c)`, and may re-rank with
the query set (inverted softmax, QB-Norm): `final = fused - T * log sum_q' exp(fused[q', g] / T)`,
the sum over the queries of the query's group (all queries in a task, or the groups of
the validation task, each ~1/10 of the gallery as in the contest). This ranks by
`exp(fused / T)` normalised over the queries for each gallery item, and so lowers the
"hubs" that are near every query. The formulas are `tuwen.ranking.scoring`'s, which `tuwen serve`
and `tuwen search` rank one query by. Everything is float64 and exact: the top-k equals a
dense computation of the same formula, ties broken by target id (a test holds this).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from tuwen.data.splits import id_bucket
from tuwen.ranking.scoring import FusionRecipe, QueryBank, Ranking, rank_block, weighted_sum
from tuwen.ranking.topk import row_logsumexp, softmax
from tuwen.run.channels import OCR, score_column
from tuwen.text.lexical import BM25Index, normalised_by_query


@dataclass
class TaskChannels:
    """The channels of one task; gallery rows sorted by id, so that ties break by id."""

    query_ids: list[str]
    gallery_ids: list[str]
    # The channels scored by the cosine of two embeddings (clip:..., text:...): (Q x D, G x D).
    embedded: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    ocr: sparse.csr_matrix | None = None  # Q x G, normalised per query
    logit_scale: float = 100.0
    _dense: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        """Give the channel names: the embedded channels in their given order, then `ocr`."""
        return list(self.embedded) + ([OCR] if self.ocr is not None else [])

    def block(self, name: str, rows: slice) -> np.ndarray:
        """Give one channel's float64 scores for a block of query rows against the whole gallery."""
        if name in self._dense:
            return self._dense[name][rows]
        if name == OCR:
            assert self.ocr is not None
            return self.ocr[rows].toarray()
        queries, gallery = self.embedded[name]
        return queries[rows].astype(np.float64) @ gallery.astype(np.float64).T

    def materialise(self) -> None:
        """Keep every channel's whole score matrix in memory, for the many recipes of tuning."""
        if self._dense:
            return
        everything = slice(0, len(self.query_ids))
        self._dense = {name: self.block(name, everything) for name in self.names}


def fused_block(channels: TaskChannels, recipe: FusionRecipe, rows: slice) -> np.ndarray:
    """Give the weighted sum of the used channels for a block of query rows."""
    return weighted_sum({name: channels.block(name, rows) for name in recipe.used}, recipe)


def query_groups(query_ids: list[str], gallery_size: int, ratio: int) -> np.ndarray:
    """Give each query's re-ranking group: groups of about gallery_size / ratio queries, by id hash.

    `ratio` 0 puts every query in one group (the contest, where all queries are known at once).
    """
    if ratio <= 0 or not query_ids:
        return np.zeros(len(query_ids), dtype=np.int64)
    count = max(1, round(len(query_ids) / max(1.0, gallery_size / ratio)))
    return np.array([int(id_bucket(q, "rerank-group") * count) for q in query_ids], dtype=np.int64)


def column_logsumexp(
    channels: TaskChannels, recipe: FusionRecipe, groups: np.ndarray, block_rows: int
) -> np.ndarray:
    """Give, per group and gallery item, the log of the sum over the group's queries of exp(fused / T)."""
    result = np.full((int(groups.max()) + 1, len(channels.gallery_ids)), -np.inf)
    for start in range(0, len(channels.query_ids), block_rows):
        rows = slice(start, start + block_rows)
        scaled = fused_block(channels, recipe, rows) / recipe.temperature
        block_groups = groups[rows]
        for group in np.unique(block_groups):
            part = scaled[block_groups == group]
            peak = part.max(axis=0)
            result[group] = np.logaddexp(result[group], peak + np.log(np.exp(part - peak).sum(axis=0)))
    return result


def query_bank(channels: TaskChannels, recipe: FusionRecipe, block_rows: int = 256) -> QueryBank | None:
    """Give the re-ranking's per-item log-sum-exp over all of the task's queries (one group, as
    the result table ranks them), kept so that a single query is re-ranked the table's way."""
    if not recipe.temperature:
        return None
    groups = np.zeros(len(channels.query_ids), dtype=np.int64)
    lse = column_logsumexp(channels, recipe, groups, block_rows)[0]
    return QueryBank(np.asarray(channels.gallery_ids, dtype=object), lse, recipe.temperature)


def fused_topk(
    channels: TaskChannels,
    recipe: FusionRecipe,
    k: int,
    groups: np.ndarray | None = None,
    block_rows: int = 256,
    bank: QueryBank | None = None,
) -> pd.DataFrame:
    """Give each query's top-`k` by the recipe's final score, with every channel's raw score.

    Rows, in query order: query_id, rank, target_id, score (final), fused (weighted sum),
    cosine (the first CLIP channel), probability (softmax over the gallery of
    logit_scale x final), and `score_<channel>` for every channel, used or not. `bank`: the
    task's `query_bank`, when already computed (its queries all in one group).
    """
    if groups is None:
        groups = np.zeros(len(channels.query_ids), dtype=np.int64)
    lse: np.ndarray | None = None
    if bank is not None:
        lse = bank.logsumexp[None, :]
    elif recipe.temperature:
        lse = column_logsumexp(channels, recipe, groups, block_rows)
    gallery_ids = np.asarray(channels.gallery_ids, dtype=object)
    query_ids = np.asarray(channels.query_ids, dtype=object)
    keep = min(k, len(gallery_ids))
    ranking = Ranking(channels.names[0], recipe)
    parts = []
    for start in range(0, len(query_ids), block_rows):
        rows = slice(start, start + block_rows)
        # Each channel once per block: for the fused score and for its own column.
        blocks = {name: channels.block(name, rows) for name in channels.names}
        rerank = _GroupShift(lse, groups[rows]) if lse is not None else None
        ranked, final = rank_block(blocks, ranking, keep, rerank)
        assert ranked.fused is not None
        row, col = ranked.rows, ranked.columns
        log_norm = row_logsumexp(final, channels.logit_scale)
        probability = softmax(ranked.scores, log_norm[row], channels.logit_scale)
        part = pd.DataFrame(
            {
                "query_id": query_ids[row + start],
                "rank": (ranked.ranks + 1).astype(np.int32),
                "target_id": gallery_ids[col],
                "score": ranked.scores,
                "fused": ranked.fused[row, col],
                "probability": probability,
            }
        )
        for name in channels.names:
            part[score_column(name)] = blocks[name][row, col]
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    first_clip = next((name for name in channels.names if name != OCR), None)
    cosine = table[score_column(first_clip)] if first_clip else table["fused"]
    table.insert(5, "cosine", cosine.astype(np.float32))
    return table


@dataclass(frozen=True)
class _GroupShift:
    """The re-ranking's log-sum-exp of a block's pairs: each query's group's, per gallery item."""

    logsumexp: np.ndarray  # groups x gallery
    groups: np.ndarray  # the block's queries' groups

    def __call__(self, fused: np.ndarray) -> np.ndarray:
        return self.logsumexp[self.groups]


def build_channels(
    query_ids: list[str],
    embedded: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    texts: tuple[dict[str, str], dict[str, str]] | None,
    logit_scale: float,
) -> TaskChannels:
    """Give the channels of a task from each embedded channel's (query, gallery) embeddings by
    id, and the (query, gallery) texts of the lexical channel (None: no OCR channel).

    Queries keep the given order (those without an embedding of every channel are left
    out); the gallery is every id that each channel embedded, sorted.
    """
    models = list(embedded)
    present = set.intersection(*(set(embedded[m][0]) for m in models)) if models else set(query_ids)
    queries = [q for q in query_ids if q in present]
    gallery = sorted(set.intersection(*(set(embedded[m][1]) for m in models)))
    channels = TaskChannels(queries, gallery, logit_scale=logit_scale)
    for model in models:
        by_query, by_gallery = embedded[model]
        channels.embedded[model] = (
            np.stack([by_query[q] for q in queries]) if queries else np.zeros((0, 0), np.float32),
            np.stack([by_gallery[g] for g in gallery]) if gallery else np.zeros((0, 0), np.float32),
        )
    if texts is not None:
        query_texts, gallery_texts = texts
        index = BM25Index([gallery_texts.get(g, "") for g in gallery])
        channels.ocr = normalised_by_query(index.scores([query_texts.get(q, "") for q in queries])).tocsr()
    return channels
