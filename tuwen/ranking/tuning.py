"""Fusion's tuning: the recipe each direction ranks by, chosen on the validation task (the
training pairs held out), never on the test queries; and each recipe's recall on validation
and on the test tasks, for results/eval/fusion.csv.

Every recipe is scored by `tuwen.ranking.fusion.fused_topk` (the tables' own ranking) and
`tuwen.ranking.recall.recall_at_k` (cn_clip's recall). Only channels that validation tells
apart from chance are combined; with many channels the search is greedy.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import poisson_binom

from tuwen.ranking.fusion import TaskChannels, fused_topk
from tuwen.ranking.recall import RECALL_KS, rankings_of, recall_at_k
from tuwen.ranking.scoring import FusionRecipe

# Beyond this many candidate recipes (5 channels: over 12,000), trying every combination
# costs minutes and fits the noise of a small validation task: search greedily instead.
EXHAUSTIVE_LIMIT = 2000
TABLE_COLUMNS = ["split", "task", "channels", "R@1", "R@5", "R@10", "chosen", "weights", "temperature"]


@dataclass(frozen=True)
class Evaluated:
    """A recipe and its recall on a task."""

    recipe: FusionRecipe
    recall: dict[str, float]

    @property
    def mean(self) -> float:
        """Give the mean of R@1, R@5 and R@10."""
        return sum(self.recall[f"R@{k}"] for k in RECALL_KS) / len(RECALL_KS)


def candidate_recipes(
    names: list[str], weights: list[float], temperatures: list[float]
) -> list[FusionRecipe]:
    """Give every recipe to try, simplest first: each channel alone, then each combination
    of channels, the first used one with weight 1 and each later one with every weight of
    `weights`; each without and with re-ranking at every temperature."""
    recipes = []
    for size in range(1, len(names) + 1):
        for used in itertools.combinations(names, size):
            for rest in itertools.product([w for w in weights if w > 0], repeat=size - 1):
                chosen = dict(zip(used, (1.0, *rest), strict=True))
                pairs = tuple((name, chosen.get(name, 0.0)) for name in names)
                recipes.append(FusionRecipe(pairs))
                recipes += [FusionRecipe(pairs, t) for t in temperatures]
    return recipes


def evaluate_recipes(
    channels: TaskChannels, recipes: list[FusionRecipe], positives: dict, groups: np.ndarray
) -> list[Evaluated]:
    """Give the recall of every recipe on a task (its channels kept in memory meanwhile)."""
    channels.materialise()
    gallery = set(channels.gallery_ids)
    evaluated = []
    for recipe in recipes:
        rankings = rankings_of(fused_topk(channels, recipe, max(RECALL_KS), groups))
        metrics = recall_at_k(rankings, positives, gallery)
        evaluated.append(Evaluated(recipe, {f"R@{k}": metrics[f"R@{k}"] for k in RECALL_KS}))
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
    for name, item in zip(names, evaluate_recipes(channels, alone, positives, groups), strict=True):
        hits = round(item.recall[f"R@{max(RECALL_KS)}"] * len(scored))
        p_values[name] = float(poisson_binom(chance).sf(hits - 1))
    return p_values


def eligible_channels(p_values: dict[str, float], alpha: float) -> list[str]:
    """Give the channels that may be combined: those that validation tells apart from chance
    (p < alpha). Where none is, all of them: there is then nothing to prefer."""
    above = [name for name, p in p_values.items() if p < alpha]
    return above or list(p_values)


def search_recipes(
    channels: TaskChannels,
    weights: list[float],
    temperatures: list[float],
    positives: dict,
    groups: np.ndarray,
    combined: list[str],
    eligible: list[str] | None = None,
) -> list[Evaluated]:
    """Give every recipe tried on a task with its recall, simplest first.

    Every channel is tried alone; only `eligible` ones (default: all) are combined. Few
    channels: every combination (`candidate_recipes`). Many: the channels in `combined`
    together (the run's models, so that fusion.csv shows them combined), then forward
    selection from the best so far: add the channel and weight (each with and without
    re-ranking) that raise mean recall most, until none does.
    """
    names = channels.names
    allowed = set(names if eligible is None else eligible)
    candidates = [
        recipe
        for recipe in candidate_recipes(names, weights, temperatures)
        if len(recipe.used) == 1 or set(recipe.used) <= allowed
    ]
    if len(candidates) <= EXHAUSTIVE_LIMIT:
        return evaluate_recipes(channels, candidates, positives, groups)

    def variants(chosen: dict[str, float]) -> list[FusionRecipe]:
        pairs = tuple((name, chosen.get(name, 0.0)) for name in names)
        return [FusionRecipe(pairs), *(FusionRecipe(pairs, t) for t in temperatures)]

    singles = [s for name in names for s in variants({name: 1.0})]
    tried = evaluate_recipes(channels, singles, positives, groups)
    together = [name for name in combined if name in allowed]
    if len(together) > 1:
        rest = itertools.product([w for w in weights if w > 0], repeat=len(together) - 1)
        recipes = [s for r in rest for s in variants(dict(zip(together, (1.0, *r), strict=True)))]
        tried += evaluate_recipes(channels, recipes, positives, groups)
    best = max((item for item in tried if set(item.recipe.used) <= allowed), key=lambda item: item.mean)
    while True:
        chosen = {name: weight for name, weight in best.recipe.weights if weight}
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
        round_ = evaluate_recipes(channels, additions, positives, groups)
        tried += round_
        better = max(round_, key=lambda item: item.mean)
        if better.mean <= best.mean:
            return tried
        best = better


def best_per_label(evaluated: list[Evaluated]) -> dict[str, Evaluated]:
    """Give the best recipe of each label (channels, rerank) by mean recall; the first of equals."""
    best: dict[str, Evaluated] = {}
    for item in evaluated:
        label = item.recipe.label
        if label not in best or item.mean > best[label].mean:
            best[label] = item
    return best


@dataclass(frozen=True)
class Choice:
    """The recipe chosen for one direction on validation, and what the choice saw."""

    task: str
    winner: Evaluated
    best: dict[str, Evaluated]  # the best recipe of each label tried
    p_values: dict[str, float]  # each channel's R@10 against chance
    eligible: list[str]  # the channels that could be combined
    tried: int  # recipes scored

    def chosen(self) -> dict:
        """Give the choice as chosen.json records it for the direction."""
        return {
            "label": self.winner.recipe.label,
            **self.winner.recipe.describe(),
            "chance_p": self.p_values,
            "eligible": self.eligible,
        }

    def rows(self) -> list[dict]:
        """Give the validation rows of fusion.csv: the best recipe of each label."""
        return [
            {
                "split": "validation",
                "task": self.task,
                "channels": label,
                **item.recall,
                "weights": json.dumps(dict(item.recipe.weights)),
                "temperature": item.recipe.temperature,
                "chosen": item is self.winner,
            }
            for label, item in self.best.items()
        ]


def choose_recipe(
    task: str,
    channels: TaskChannels,
    positives: dict,
    groups: np.ndarray,
    fusion: dict,
    combined: list[str],
) -> Choice:
    """Choose a direction's recipe on its validation task, by the `fusion` settings (weights,
    temperatures, chance_alpha; re-ranking only with fusion.enabled, not for several models
    alone): the best mean recall among recipes of channels apart from chance, the simplest
    of equals. A channel at chance level is scored alone but never chosen."""
    temperatures = fusion["temperatures"] if fusion["enabled"] else []
    p_values = chance_p_values(channels, positives, groups)
    eligible = eligible_channels(p_values, fusion["chance_alpha"])
    evaluated = search_recipes(
        channels, fusion["weights"], temperatures, positives, groups, combined, eligible
    )
    best = best_per_label(evaluated)
    winner = max(
        (item for item in best.values() if set(item.recipe.used) <= set(eligible)), key=lambda item: item.mean
    )
    return Choice(task, winner, best, p_values, eligible, len(evaluated))


def test_rows(
    task: str, channels: TaskChannels, validation: pd.DataFrame, direction: str, positives: dict
) -> pd.DataFrame:
    """Give fusion.csv's test rows of a task: the recipes of its direction's validation rows,
    each scored on the task (all test queries in one re-ranking group, known at once)."""
    on_task = validation[validation["task"] == direction]
    recipes = [
        FusionRecipe.from_dict(
            {
                "weights": json.loads(row.weights),
                "temperature": None if _is_missing(row.temperature) else row.temperature,
            }
        )
        for row in on_task.itertuples(index=False)
    ]
    groups = np.zeros(len(channels.query_ids), dtype=np.int64)
    evaluated = evaluate_recipes(channels, recipes, positives, groups)
    test = on_task.assign(split="test", task=task)
    for key in ("R@1", "R@5", "R@10"):
        test[key] = [item.recall[key] for item in evaluated]
    return test


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
