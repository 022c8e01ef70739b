"""Recall@K of ranked results against ground-truth pairs, as cn_clip's evaluation defines it."""

from __future__ import annotations

import pandas as pd

from tuwen.layout import TASKS, TEXTS

RECALL_KS = (1, 5, 10)


def read_ground_truth(path: str) -> pd.DataFrame:
    """Read a `text_id,image_id` ground-truth CSV (any of the encodings ingest accepts)."""
    from tuwen.ingest import read_csv_records

    records = read_csv_records(path, ["text_id", "image_id"])
    return pd.DataFrame([row for _, row in records.rows], columns=["text_id", "image_id"])


def positives_by_query(ground_truth: pd.DataFrame, task: str) -> dict[str, set[str]]:
    """Give each query's true targets from `text_id,image_id` pairs: texts for i2t, images for t2i."""
    queries_are_texts = TASKS[task].query_kind == TEXTS
    query, target = ("text_id", "image_id") if queries_are_texts else ("image_id", "text_id")
    positives: dict[str, set[str]] = {}
    for q, t in zip(
        ground_truth[query].astype(str).str.strip(), ground_truth[target].astype(str).str.strip(), strict=True
    ):
        positives.setdefault(q, set()).add(t)
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
