"""Recall figures equal those of cn_clip's own evaluation scripts on the same predictions."""

import numpy as np
import pandas as pd
import pytest

from tests.cn_clip_reference import cn_clip_recall
from tests.conftest import contest_positives
from tuwen.ranking.recall import rankings_of, recall_at_k, summarise


def random_topk(rng, truth_of, gallery, k=10):
    """Rank each query's true target at a random place in 1..15 (absent beyond 10)."""
    rows = []
    for query, true_target in truth_of.items():
        others = [t for t in gallery if t != true_target]
        targets = list(rng.choice(others, size=k, replace=False))
        place = int(rng.integers(1, 16))
        if place <= k:
            targets[place - 1] = true_target
        rows += [{"query_id": query, "rank": r, "target_id": t} for r, t in enumerate(targets, start=1)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("task", ["t2i", "i2t"])
def test_recall_equals_cn_clip_evaluation(tmp_path, task):
    rng = np.random.default_rng(5)
    texts = [f"Word-{i}" for i in range(60)]
    images = [f"Image-{i}.jpg" for i in range(60)]
    truth = pd.DataFrame({"text_id": texts, "image_id": images})
    queries, gallery = (texts, images) if task == "t2i" else (images, texts)
    topk = random_topk(rng, dict(zip(queries, gallery, strict=True)), gallery)
    positives = contest_positives(truth, task, tmp_path)
    ours = recall_at_k(rankings_of(topk), positives, set(gallery))
    reference = cn_clip_recall(topk, positives, task, tmp_path)
    assert 0 < ours["R@1"] < ours["R@5"] < ours["R@10"] < 1
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-9)


def test_queries_without_truth_in_the_gallery_are_counted_not_scored(tmp_path):
    truth = pd.DataFrame({"text_id": ["a", "b"], "image_id": ["x", "y"]})
    topk = pd.DataFrame({"query_id": ["a", "b"], "rank": [1, 1], "target_id": ["x", "x"]})
    metrics = recall_at_k(rankings_of(topk), contest_positives(truth, "t2i", tmp_path), {"x"})
    assert metrics["queries_scored"] == 1 and metrics["queries_without_truth"] == 1
    assert metrics["R@1"] == 1.0


def test_overall_mean_recall_averages_six_figures():
    per_task = {
        "t2i": {"R@1": 0.1, "R@5": 0.2, "R@10": 0.3, "mean_recall": 0.2},
        "i2t": {"R@1": 0.4, "R@5": 0.5, "R@10": 0.6, "mean_recall": 0.5},
    }
    assert summarise(per_task)["mean_recall"] == pytest.approx(0.35)
