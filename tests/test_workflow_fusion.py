"""Fusion inside the workflow: validation from the training hold-out, OCR, fusion.csv, fused tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SMALL_DEMO, planned_jobs, snakemake
from tuwen.data.splits import is_validation
from tuwen.ranking.exact import TOPK_COLUMNS
from tuwen.run.declaration import TEXTS

# A whole workflow run with training, OCR and tuning: minutes, so `make test-slow`.
pytestmark = pytest.mark.slow

FUSION_CSV_COLUMNS = ["split", "task", "channels", "R@1", "R@5", "R@10", "chosen", "weights", "temperature"]


@pytest.fixture(scope="module")
def fused(fusion_run) -> Path:
    return fusion_run


def test_fusion_csv_has_each_channel_and_one_chosen_setting_per_task(fused):
    table = pd.read_csv(fused / "results/eval/fusion.csv")
    assert list(table.columns) == FUSION_CSV_COLUMNS
    assert set(table["split"]) == {"validation", "test"} and set(table["task"]) == {"t2i", "i2t"}
    labels = set(table["channels"])
    # Training on: two models (the base and the fine-tuned one), and the OCR channel.
    assert {
        "clip:tuwen-tiny-rn",
        "clip:tuwen-tiny-rn:base",
        "ocr",
        "clip:tuwen-tiny-rn+ocr",
        "clip:tuwen-tiny-rn+rerank",
    } <= labels
    for (split, task), rows in table.groupby(["split", "task"]):
        assert rows["chosen"].sum() == 1, (split, task)
        assert rows["channels"].is_unique
    for task, rows in table[table["split"] == "validation"].groupby("task"):
        mean = rows[["R@1", "R@5", "R@10"]].mean(axis=1)
        assert mean[rows["chosen"]].iloc[0] == pytest.approx(mean.max())
        test_chosen = table[(table["split"] == "test") & (table["task"] == task) & table["chosen"]]
        assert test_chosen["channels"].item() == rows.loc[rows["chosen"], "channels"].item()


def test_validation_is_exactly_the_training_hold_out(fused):
    pairs = pd.read_parquet(fused / "results/manifest/train_texts/texts.parquet")
    accepted = pairs[pairs["status"] == "ok"]
    held_out = {i for i in accepted["image_id"] if is_validation(i, 0.2)}
    validation = pd.read_parquet(fused / "results/manifest/val_texts/texts.parquet")
    assert set(validation["text_id"]) == held_out
    trained = json.loads((fused / "results/models/tuwen-tiny-rn/finetune/val_metrics.json").read_text())
    assert trained["validation_pairs"] == len(held_out)


def test_tables_follow_the_fused_ranking_and_keep_every_channel(fused):
    chosen = json.loads((fused / "results/fusion/chosen.json").read_text())
    for task, number in (("t2i", 1), ("i2t", 2)):
        topk = pd.read_parquet(fused / f"results/retrieval/{task}/topk.parquet")
        assert {
            "score",
            "fused",
            "score_clip_tuwen-tiny-rn",
            "score_clip_tuwen-tiny-rn_base",
            "score_ocr",
        } <= set(topk.columns)
        assert (topk.groupby("query_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
        table = pd.read_csv(fused / f"results/result{number}.csv")
        top5 = topk[topk["rank"] <= 5]
        assert table.iloc[:, 2].tolist() == top5["target_id"].tolist()
        assert set(chosen[task]) == {"label", "weights", "temperature", "chance_p", "eligible"}
        # Every channel's p against chance is recorded; only eligible ones carry weight.
        assert set(chosen[task]["chance_p"]) == set(chosen[task]["weights"])
        used = {name for name, weight in chosen[task]["weights"].items() if weight}
        assert used <= set(chosen[task]["eligible"])
        below = {name for name, p in chosen[task]["chance_p"].items() if p < 0.01}  # the default alpha
        assert set(chosen[task]["eligible"]) == (below or set(chosen[task]["weights"])), chosen[task]


def test_ocr_is_accounted_for(fused):
    counts = pd.read_csv(fused / "results/summary/ocr.csv").set_index("collection")
    assert list(counts.index) == ["t2i_gallery", "i2t_images", "val_images"]
    for name in ("t2i_gallery", "i2t_images"):
        accepted = pd.read_parquet(fused / f"results/manifest/{name}/images.parquet").query("status == 'ok'")
        row = counts.loc[name]
        assert row["images"] == len(accepted) == row["with_text"] + row["without_text"] + row["failed"]
    assert pd.read_csv(fused / "results/summary/ocr_failures.csv").columns.tolist() == [
        "collection",
        "id",
        "reason",
    ]


def test_fusion_off_is_the_plain_search(demo_run):
    topk = pd.read_parquet(demo_run / "results/retrieval/t2i/topk.parquet")
    assert list(topk.columns) == TOPK_COLUMNS
    # Fusion's settings do not touch a run with fusion off.
    changed = {**SMALL_DEMO, "fusion": {"enabled": False, "ocr": False, "weights": [3.0]}}
    assert planned_jobs(snakemake(demo_run, "-n", config=changed).stdout) == []


def test_the_browse_page_shows_the_fused_score_that_ranks(fused):
    script = (fused / "results/browse/data.js").read_text(encoding="utf-8")
    data = json.loads(script.removeprefix("window.TUWEN_BROWSE = ").rstrip().removesuffix(";"))
    for task in ("t2i", "i2t"):
        topk = pd.read_parquet(fused / f"results/retrieval/{task}/topk.parquet").set_index(
            ["query_id", "rank"]
        )
        for query in data["tasks"][task]["queries"]:
            for hit in query["hits"]:
                row = topk.loc[(query["id"], hit["rank"])]
                assert hit["score"] == round(float(row["score"]), 4) and hit["cosine"] == round(
                    float(row["cosine"]), 4
                )
                assert sum(value for _, value in hit["parts"]) == pytest.approx(row["score"], abs=5e-4)


def test_the_text_channel_scores_are_the_sentence_encoders_cosines(fused):
    """text:use-m3 in topk.parquet is the cosine of a direct encoder call on the caption and on
    the text OCR read in the image; it is tried alone and with the others in fusion.csv."""
    import numpy as np

    from tuwen.data.ingest import accepted_captions
    from tuwen.run import layout
    from tuwen.text.ocr import read_ocr_texts
    from tuwen.text.sentences import load_sentence_encoder

    table = pd.read_csv(fused / "results/eval/fusion.csv")
    assert "text:use-m3" in set(table["channels"])
    assert any("text:use-m3" in label and "+" in label for label in table["channels"])
    card = json.loads((fused / layout.sentence_encoder_card("use-m3")).read_text())
    encoder = load_sentence_encoder("use-m3")
    assert card["tag"] == encoder.tag and card["dim"] == 512
    captions = accepted_captions(fused / layout.manifest("t2i_queries", TEXTS))
    assignment = pd.read_parquet(fused / layout.assignment("t2i_gallery"))
    read = read_ocr_texts(sorted((fused / layout.ocr_folder("t2i_gallery")).glob("*.parquet")), assignment)
    topk = pd.read_parquet(fused / "results/retrieval/t2i/topk.parquet").head(30)
    queries = encoder.encode([captions[q] for q in topk["query_id"]])
    targets = encoder.encode([read.get(t, "") for t in topk["target_id"]])
    expected = np.sum(queries.astype(np.float64) * targets.astype(np.float64), axis=1)
    assert np.allclose(topk["score_text_use-m3"].to_numpy(), expected, atol=1e-5)
