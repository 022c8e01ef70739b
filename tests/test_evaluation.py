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


@pytest.mark.parametrize(("query_kind", "direction"), [("texts", "t2i"), ("images", "i2t")])
@pytest.mark.parametrize("whole_numbers", [True, False])
def test_cn_clip_files_are_scored_by_cn_clip_as_tuwen_scores_them(
    tmp_path, query_kind, direction, whole_numbers
):
    from tests.cn_clip_reference import run_cn_clip_evaluation
    from tuwen.report.cn_clip_format import write_cn_clip_files

    rng = np.random.default_rng(7)
    name = (lambda side, i: str(1000 + i)) if whole_numbers else (lambda side, i: f"{side}-{i:03d}.jpg")
    queries = [name("q", i) for i in range(40)]
    gallery = [name("g", i) for i in range(200, 260)]
    # Some queries have two true targets; two have none in the gallery (not scored).
    positives = {
        q: {gallery[i], gallery[(i + 7) % 60]} if i % 3 == 0 else {gallery[i]} for i, q in enumerate(queries)
    }
    positives[queries[0]] = {"elsewhere"}
    del positives[queries[1]]
    truth = {q: sorted(p) for q, p in positives.items()}
    topk = random_topk(rng, {q: t[0] for q, t in truth.items()}, gallery)
    topk = pd.concat([topk, random_topk(rng, {queries[1]: gallery[0]}, gallery)])
    rankings = rankings_of(topk)
    output = write_cn_clip_files(tmp_path, query_kind, rankings, positives, set(gallery))
    printed = run_cn_clip_evaluation(
        tmp_path / "reference.jsonl", tmp_path / "predictions.jsonl", direction, tmp_path / "printed.json"
    )
    assert printed["success"] and printed["scoreJson"] == pytest.approx(output["scoreJson"], abs=1e-9)
    tuwen = recall_at_k(rankings, positives, set(gallery))
    assert output["scoreJson"]["r5"] == pytest.approx(100 * tuwen["R@5"], abs=1e-9)
    assert len((tmp_path / "reference.jsonl").read_text().splitlines()) == tuwen["queries_scored"] == 38
    ids = pd.read_csv(tmp_path / "ids.csv", dtype={"id": str})
    if whole_numbers:
        assert output["ids"] == "as given" and (ids["id"] == ids["cn_clip_id"].astype(str)).all()
    else:
        assert output["ids"].startswith("numbered") and not ids.duplicated(["side", "cn_clip_id"]).any()


def test_a_gallery_under_ten_items_is_not_given_to_cn_clip(tmp_path):
    from tuwen.report.cn_clip_format import write_cn_clip_files

    rankings = {"q": ["a", "b", "c"]}
    output = write_cn_clip_files(tmp_path, "texts", rankings, {"q": {"a"}}, {"a", "b", "c"})
    assert not output["success"] and "fewer than 10 hits" in output["errorMsg"]
    assert (tmp_path / "predictions.jsonl").read_text() == ""
