"""Recall@K of ranked results against ground-truth pairs, as cn_clip's evaluation defines it."""

from __future__ import annotations

import pandas as pd

from tuwen.run.declaration import GroundTruth

RECALL_KS = (1, 5, 10)


def read_positives(truth: GroundTruth) -> dict[str, set[str]]:
    """Give each query's true gallery ids from a task's ground-truth table (any format
    `tuwen.files.records` reads: the contest's `text_id,image_id` CSV, a TSV, JSON Lines, ...)."""
    from tuwen.files.records import read_records

    records = read_records(truth.file, [truth.query_column, truth.gallery_column])
    positives: dict[str, set[str]] = {}
    for _, row in records.rows:
        query, target = row[truth.query_column].strip(), row[truth.gallery_column].strip()
        positives.setdefault(query, set()).add(target)
    return positives


def rankings_of(topk: pd.DataFrame) -> dict[str, list[str]]:
    """Give each query's target ids in rank order from a top-k table."""
    ordered = topk.sort_values(["query_id", "rank"], kind="stable")
    return {q: group["target_id"].tolist() for q, group in ordered.groupby("query_id", sort=False)}


def recall_at_k(
    rankings: dict[str, list[str]], positives: dict[str, set[str]], gallery_ids: set[str]
) -> dict:
    """Give R@1/5/10 (fractions) and mean recall over the queries that have a true target in the gallery.

    A query counts as a hit at K when any of its true targets is among its first K results
    (cn_clip's `evaluation.py`). Queries without a true target in the gallery cannot be
    scored and are only counted.
    """
    scored = [q for q in rankings if positives.get(q, set()) & gallery_ids]
    metrics: dict = {"queries_scored": len(scored), "queries_without_truth": len(rankings) - len(scored)}
    for k in RECALL_KS:
        hits = sum(1 for q in scored if positives[q] & set(rankings[q][:k]))
        metrics[f"R@{k}"] = hits / len(scored) if scored else float("nan")
    metrics["mean_recall"] = sum(metrics[f"R@{k}"] for k in RECALL_KS) / len(RECALL_KS)
    return metrics


def summarise(per_task: dict[str, dict]) -> dict:
    """Give the report's metrics: each direction, plus mean recall over both (cn_clip's MR)."""
    values = [m[f"R@{k}"] for m in per_task.values() for k in RECALL_KS]
    return {**per_task, "mean_recall": sum(values) / len(values) if values else float("nan")}
