"""Fusion of retrieval channels: several CLIP models' cosines, an OCR–caption lexical score,
and re-ranking with the whole query set.

For one task (queries x gallery), each channel gives a score per pair:
- `clip:<model>` (and `clip:<model>:base`): the cosine of that model's embeddings;
- `ocr`: BM25 of the query's text against the gallery item's text (caption vs the text
  read in the image), divided by the query's best score, so it lies in [0, 1] for every query.

A setting fuses them as a weighted sum, `fused = sum(w_c * score_c)`, and may re-rank with
the query set (inverted softmax, QB-Norm): `final = fused - T * log sum_q' exp(fused[q', g] / T)`,
the sum over the queries of the query's group (all queries in a task, or the groups of
the validation task, each ~1/10 of the gallery as in the contest). This ranks by
`exp(fused / T)` normalised over the queries for each gallery item, and so lowers the
"hubs" that are near every query. The formulas are `tuwen.ranking.scoring`'s, which `tuwen serve`
and `tuwen search` rank one query by. Everything is float64 and exact: the top-k equals a
dense computation of the same formula, ties broken by target id (a test holds this).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import poisson_binom

from tuwen.data.splits import id_bucket
from tuwen.ranking.exact import ranked_top
from tuwen.ranking.recall import RECALL_KS, rankings_of, recall_at_k
from tuwen.ranking.scoring import OCR, FusionRecipe, QueryBank, reranked, score_column, weighted_sum
from tuwen.text.lexical import BM25Index, normalised_by_query


@dataclass
class TaskChannels:
    """The channels of one task; gallery rows sorted by id, so that ties break by id."""

    query_ids: list[str]
    gallery_ids: list[str]
    clip: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # channel: (Q x D, G x D)
    ocr: sparse.csr_matrix | None = None  # Q x G, normalised per query
    logit_scale: float = 100.0
    _dense: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        """Give the channel names: the CLIP channels in their given order, then `ocr`."""
        return list(self.clip) + ([OCR] if self.ocr is not None else [])

    def block(self, name: str, rows: slice) -> np.ndarray:
        """Give one channel's float64 scores for a block of query rows against the whole gallery."""
        if name in self._dense:
            return self._dense[name][rows]
        if name == OCR:
            return self.ocr[rows].toarray()
        queries, gallery = self.clip[name]
        return queries[rows].astype(np.float64) @ gallery.astype(np.float64).T

    def materialise(self) -> None:
        """Keep every channel's whole score matrix in memory, for the many settings of tuning."""
        if self._dense:
            return
        everything = slice(0, len(self.query_ids))
        self._dense = {name: self.block(name, everything) for name in self.names}


def fused_block(channels: TaskChannels, setting: FusionRecipe, rows: slice) -> np.ndarray:
    """Give the weighted sum of the used channels for a block of query rows."""
    return weighted_sum({name: channels.block(name, rows) for name in setting.used}, setting)


def query_groups(query_ids: list[str], gallery_size: int, ratio: int) -> np.ndarray:
    """Give each query's re-ranking group: groups of about gallery_size / ratio queries, by id hash.

    `ratio` 0 puts every query in one group (the contest, where all queries are known at once).
    """
    if ratio <= 0 or not query_ids:
        return np.zeros(len(query_ids), dtype=np.int64)
    count = max(1, round(len(query_ids) / max(1.0, gallery_size / ratio)))
    return np.array([int(id_bucket(q, "rerank-group") * count) for q in query_ids], dtype=np.int64)


def column_logsumexp(
    channels: TaskChannels, setting: FusionRecipe, groups: np.ndarray, block_rows: int
) -> np.ndarray:
    """Give, per group and gallery item, the log of the sum over the group's queries of exp(fused / T)."""
    result = np.full((int(groups.max()) + 1, len(channels.gallery_ids)), -np.inf)
    for start in range(0, len(channels.query_ids), block_rows):
        rows = slice(start, start + block_rows)
        scaled = fused_block(channels, setting, rows) / setting.temperature
        block_groups = groups[rows]
        for group in np.unique(block_groups):
            part = scaled[block_groups == group]
            peak = part.max(axis=0)
            result[group] = np.logaddexp(result[group], peak + np.log(np.exp(part - peak).sum(axis=0)))
    return result


def query_bank(channels: TaskChannels, setting: FusionRecipe, block_rows: int = 256) -> QueryBank | None:
    """Give the re-ranking's per-item log-sum-exp over all of the task's queries (one group, as
    the result table ranks them), kept so that a single query is re-ranked the table's way."""
    if not setting.temperature:
        return None
    groups = np.zeros(len(channels.query_ids), dtype=np.int64)
    lse = column_logsumexp(channels, setting, groups, block_rows)[0]
    return QueryBank(np.asarray(channels.gallery_ids, dtype=object), lse, setting.temperature)


def fused_topk(
    channels: TaskChannels,
    setting: FusionRecipe,
    k: int,
    groups: np.ndarray | None = None,
    block_rows: int = 256,
    bank: QueryBank | None = None,
) -> pd.DataFrame:
    """Give each query's top-`k` by the setting's final score, with every channel's raw score.

    Rows, in query order: query_id, rank, target_id, score (final), fused (weighted sum),
    cosine (the first CLIP channel), probability (softmax over the gallery of
    logit_scale x final), and `score_<channel>` for every channel, used or not. `bank`: the
    task's `query_bank`, when already computed (its queries all in one group).
    """
    if groups is None:
        groups = np.zeros(len(channels.query_ids), dtype=np.int64)
    if bank is not None:
        lse = bank.logsumexp[None, :]
    else:
        lse = column_logsumexp(channels, setting, groups, block_rows) if setting.temperature else None
    gallery_ids = np.asarray(channels.gallery_ids, dtype=object)
    query_ids = np.asarray(channels.query_ids, dtype=object)
    keep = min(k, len(gallery_ids))
    parts = []
    for start in range(0, len(query_ids), block_rows):
        rows = slice(start, start + block_rows)
        # Each channel once per block: for the fused score and for its own column.
        blocks = {name: channels.block(name, rows) for name in channels.names}
        fused = weighted_sum(blocks, setting)
        final = reranked(fused, lse[groups[rows]], setting.temperature) if lse is not None else fused
        row, col, value, rank = ranked_top(final, keep)
        # Softmax over the gallery of logit_scale x final, each row shifted by its peak.
        peak = final.max(axis=1)
        log_norm = np.log(np.exp(channels.logit_scale * (final - peak[:, None])).sum(axis=1))
        probability = np.exp(channels.logit_scale * (value - peak[row]) - log_norm[row])
        part = pd.DataFrame(
            {
                "query_id": query_ids[row + start],
                "rank": (rank + 1).astype(np.int32),
                "target_id": gallery_ids[col],
                "score": value,
                "fused": fused[row, col],
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


def candidate_settings(
    names: list[str], weights: list[float], temperatures: list[float]
) -> list[FusionRecipe]:
    """Give every setting to try, simplest first: each channel alone, then each combination
    of channels, the first used one with weight 1 and each later one with every weight of
    `weights`; each without and with re-ranking at every temperature."""
    settings = []
    for size in range(1, len(names) + 1):
        for used in itertools.combinations(names, size):
            for rest in itertools.product([w for w in weights if w > 0], repeat=size - 1):
                chosen = dict(zip(used, (1.0, *rest), strict=True))
                pairs = tuple((name, chosen.get(name, 0.0)) for name in names)
                settings.append(FusionRecipe(pairs))
                settings += [FusionRecipe(pairs, t) for t in temperatures]
    return settings


def build_channels(
    query_ids: list[str],
    clip: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    texts: tuple[dict[str, str], dict[str, str]] | None,
    logit_scale: float,
) -> TaskChannels:
    """Give the channels of a task from each CLIP channel's (query, gallery) embeddings by id,
    and the (query, gallery) texts of the lexical channel (None: no OCR channel).

    Queries keep the given order (those without an embedding of every model are left
    out); the gallery is every id that each model embedded, sorted.
    """
    models = list(clip)
    present = set.intersection(*(set(clip[m][0]) for m in models)) if models else set(query_ids)
    queries = [q for q in query_ids if q in present]
    gallery = sorted(set.intersection(*(set(clip[m][1]) for m in models)))
    channels = TaskChannels(queries, gallery, logit_scale=logit_scale)
    for model in models:
        by_query, by_gallery = clip[model]
        channels.clip[model] = (
            np.stack([by_query[q] for q in queries]) if queries else np.zeros((0, 0), np.float32),
            np.stack([by_gallery[g] for g in gallery]) if gallery else np.zeros((0, 0), np.float32),
        )
    if texts is not None:
        query_texts, gallery_texts = texts
        index = BM25Index([gallery_texts.get(g, "") for g in gallery])
        channels.ocr = normalised_by_query(index.scores([query_texts.get(q, "") for q in queries])).tocsr()
    return channels


@dataclass(frozen=True)
class Evaluated:
    """A setting and its recall on a task."""

    setting: FusionRecipe
    recall: dict[str, float]

    @property
    def mean(self) -> float:
        """Give the mean of R@1, R@5 and R@10."""
        return sum(self.recall[f"R@{k}"] for k in RECALL_KS) / len(RECALL_KS)


def evaluate_settings(
    channels: TaskChannels, settings: list[FusionRecipe], positives: dict, groups: np.ndarray
) -> list[Evaluated]:
    """Give the recall of every setting on a task (its channels kept in memory meanwhile)."""
    channels.materialise()
    gallery = set(channels.gallery_ids)
    evaluated = []
    for setting in settings:
        rankings = rankings_of(fused_topk(channels, setting, max(RECALL_KS), groups))
        metrics = recall_at_k(rankings, positives, gallery)
        evaluated.append(Evaluated(setting, {f"R@{k}": metrics[f"R@{k}"] for k in RECALL_KS}))
    return evaluated


def chance_p_values(channels: TaskChannels, positives: dict, groups: np.ndarray) -> dict[str, float]:
    """Give, per channel, the probability that a ranking by chance alone finds at least as
    many queries' true targets in its top 10 as the channel alone does (its R@10 hits).

    Chance: each query's top 10 a uniformly random 10 of the gallery, so a query with m true
    targets among G items hits with probability 1 - C(G-m, 10) / C(G, 10); the hits of all
    queries are then a Poisson-binomial count.
    """
    gallery = set(channels.gallery_ids)
    size, k = len(gallery), min(max(RECALL_KS), len(gallery))
    scored = [q for q in channels.query_ids if positives.get(q, set()) & gallery]
    chance = []
    for query in scored:
        miss = 1.0
        for i in range(k):  # C(G-m, k) / C(G, k) as a product, free of huge integers
            miss *= max(0.0, (size - len(positives[query] & gallery) - i) / (size - i))
        chance.append(1.0 - miss)
    if not scored:
        return dict.fromkeys(channels.names, 1.0)
    names = channels.names
    alone = [FusionRecipe(tuple((other, float(other == name)) for other in names)) for name in names]
    p_values = {}
    for name, item in zip(names, evaluate_settings(channels, alone, positives, groups), strict=True):
        hits = round(item.recall[f"R@{max(RECALL_KS)}"] * len(scored))
        p_values[name] = float(poisson_binom(chance).sf(hits - 1))
    return p_values


def eligible_channels(p_values: dict[str, float], alpha: float) -> list[str]:
    """Give the channels that may be combined: those that validation tells apart from chance
    (p < alpha). Where none is, all of them: there is then nothing to prefer."""
    above = [name for name, p in p_values.items() if p < alpha]
    return above or list(p_values)


# Beyond this many candidate settings (5 channels: over 12,000), trying every combination
# costs minutes and fits the noise of a small validation task: search greedily instead.
EXHAUSTIVE_LIMIT = 2000


def search_settings(
    channels: TaskChannels,
    weights: list[float],
    temperatures: list[float],
    positives: dict,
    groups: np.ndarray,
    combined: list[str],
    eligible: list[str] | None = None,
) -> list[Evaluated]:
    """Give every setting tried on a task with its recall, simplest first.

    Every channel is tried alone; only `eligible` ones (default: all) are combined. Few
    channels: every combination (`candidate_settings`). Many: the channels in `combined`
    together (the run's models, so that fusion.csv shows them combined), then forward
    selection from the best so far: add the channel and weight (each with and without
    re-ranking) that raise mean recall most, until none does.
    """
    names = channels.names
    allowed = set(names if eligible is None else eligible)
    candidates = [
        setting
        for setting in candidate_settings(names, weights, temperatures)
        if len(setting.used) == 1 or set(setting.used) <= allowed
    ]
    if len(candidates) <= EXHAUSTIVE_LIMIT:
        return evaluate_settings(channels, candidates, positives, groups)

    def variants(chosen: dict[str, float]) -> list[FusionRecipe]:
        pairs = tuple((name, chosen.get(name, 0.0)) for name in names)
        return [FusionRecipe(pairs), *(FusionRecipe(pairs, t) for t in temperatures)]

    singles = [s for name in names for s in variants({name: 1.0})]
    tried = evaluate_settings(channels, singles, positives, groups)
    together = [name for name in combined if name in allowed]
    if len(together) > 1:
        rest = itertools.product([w for w in weights if w > 0], repeat=len(together) - 1)
        settings = [s for r in rest for s in variants(dict(zip(together, (1.0, *r), strict=True)))]
        tried += evaluate_settings(channels, settings, positives, groups)
    best = max((item for item in tried if set(item.setting.used) <= allowed), key=lambda item: item.mean)
    while True:
        chosen = {name: weight for name, weight in best.setting.weights if weight}
        additions = [
            s
            for name in names
            if name not in chosen and name in allowed
            for weight in weights
            if weight > 0
            for s in variants({**chosen, name: weight})
        ]
        if not additions:
            return tried
        round_ = evaluate_settings(channels, additions, positives, groups)
        tried += round_
        better = max(round_, key=lambda item: item.mean)
        if better.mean <= best.mean:
            return tried
        best = better


def best_per_label(evaluated: list[Evaluated]) -> dict[str, Evaluated]:
    """Give the best setting of each label (channels, rerank) by mean recall; the first of equals."""
    best: dict[str, Evaluated] = {}
    for item in evaluated:
        label = item.setting.label
        if label not in best or item.mean > best[label].mean:
            best[label] = item
    return best
