"""Recall, the one place it is computed: R@K of ranked results against ground-truth pairs as
cn_clip's evaluation defines it (the tables, fusion's tuning, fine-tuning's validation), and
an approximate index's recall of the exact top-k (the index stage and its benchmark)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuwen.ranking.topk import ranked_top
from tuwen.run.declaration import GroundTruth

RECALL_KS = (1, 5, 10)


def read_positives(truth: GroundTruth) -> dict[str, set[str]]:
    """Give each query's true gallery ids from a task's ground-truth table (any format
    `tuwen.files.records` reads: the contest's `text_id,image_id` CSV, a TSV, JSON Lines, ...)."""
    from tuwen.files.records import read_records, values

    records = read_records(truth.file, [truth.query_column, truth.gallery_column])
    positives: dict[str, set[str]] = {}
    # Either side may be a list (CN-CLIP's texts.jsonl: a caption's image_ids): every pair counts.
    for _, row in records.rows:
        targets = values(row[truth.gallery_column])
        for query in values(row[truth.query_column]):
            positives.setdefault(query, set()).update(targets)
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


def paired_recall(
    similarity: np.ndarray, text_ids: list[str], text_images: list[str], image_ids: list[str]
) -> dict:
    """Give R@1/5/10 both ways and their mean for caption–image pairs (`similarity`: texts x
    images): caption i belongs to image `text_images[i]`; an image with several captions is
    one gallery item, and each of its captions is a hit for it. Each direction is ranked by
    `ranked_top`."""
    positives = {
        "t2i": {text: {image} for text, image in zip(text_ids, text_images, strict=True)},
        "i2t": {},
    }
    for text, image in zip(text_ids, text_images, strict=True):
        positives["i2t"].setdefault(image, set()).add(text)
    result: dict = {}
    for task, scores, queries, targets in (
        ("t2i", similarity, text_ids, image_ids),
        ("i2t", similarity.T, image_ids, text_ids),
    ):
        rows, columns, _, _ = ranked_top(np.ascontiguousarray(scores), min(max(RECALL_KS), len(targets)))
        labels = np.asarray(targets, dtype=object)
        rankings: dict[str, list[str]] = {}
        for row, column in zip(rows, columns, strict=True):
            rankings.setdefault(queries[row], []).append(labels[column])
        result[task] = recall_at_k(rankings, positives[task], set(targets))
    result["mean_recall"] = float(np.mean([result[t][f"R@{k}"] for t in ("t2i", "i2t") for k in RECALL_KS]))
    return result


def neighbour_recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Give the share of the exact top-k ids (rows of `exact`) among those found (rows of `found`:
    an approximate index's top-k for its recall@k, or all its candidates)."""
    hits = sum(len(set(f) & set(e)) for f, e in zip(found, exact, strict=True))
    return hits / exact.size if exact.size else 1.0


def summarise(per_task: dict[str, dict]) -> dict:
    """Give the report's metrics: each direction, plus mean recall over both (cn_clip's MR)."""
    values = [m[f"R@{k}"] for m in per_task.values() for k in RECALL_KS]
    return {**per_task, "mean_recall": sum(values) / len(values) if values else float("nan")}
