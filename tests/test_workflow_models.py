"""Several CN-CLIP models in one run: each trained on its own, combined as chosen on validation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SMALL_DEMO, planned_jobs, snakemake

# Two architectures; the second trains for one epoch where the run's setting says two.
TWO_MODELS = {**SMALL_DEMO, "models": ["tuwen-tiny-rn", {"name": "tuwen-tiny", "train": {"epochs": 1}}]}
CHANNELS = ["clip:tuwen-tiny-rn", "clip:tuwen-tiny"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("models")
    snakemake(workdir, config=TWO_MODELS)
    return workdir


def test_each_model_is_fine_tuned_with_its_own_settings(two_models):
    epochs = {}
    for name in ("tuwen-tiny-rn", "tuwen-tiny"):
        folder = two_models / "results/models" / name
        base = json.loads((folder / "base/model.json").read_text())
        tuned = json.loads((folder / "finetune/model.json").read_text())
        kept = json.loads((folder / "finetune/val_metrics.json").read_text())["kept"]
        # Weights of their own, unless no epoch beat the model before training (then its own).
        assert base["name"] == tuned["name"] == name
        assert (base["tag"] == tuned["tag"]) == (kept == "zero-shot"), kept
        assert (two_models / "results/features" / tuned["tag"] / "t2i_gallery").is_dir()
        epochs[name] = pd.read_csv(folder / "finetune/train_log.csv")["epoch"].max()
    assert epochs == {"tuwen-tiny-rn": 2, "tuwen-tiny": 1}


def test_fusion_csv_has_each_model_alone_and_combined_and_the_tables_follow_the_choice(two_models):
    table = pd.read_csv(two_models / "results/eval/fusion.csv")
    assert set(table["split"]) == {"validation", "test"}
    for (split, task), rows in table.groupby(["split", "task"]):
        # Fusion is off: the models' channels alone and together, no OCR, no re-ranking.
        assert sorted(rows["channels"]) == sorted([*CHANNELS, "+".join(CHANNELS)]), (split, task)
        assert rows["chosen"].sum() == 1
    chosen = json.loads((two_models / "results/fusion/chosen.json").read_text())
    for task, number in (("t2i", 1), ("i2t", 2)):
        validation = table[(table["split"] == "validation") & (table["task"] == task)]
        means = validation[["R@1", "R@5", "R@10"]].mean(axis=1)
        assert means[validation["chosen"]].item() == pytest.approx(means.max())
        assert validation.loc[validation["chosen"], "channels"].item() == chosen[task]["label"]
        topk = pd.read_parquet(two_models / f"results/retrieval/{task}/topk.parquet")
        assert {"score_clip_tuwen-tiny-rn", "score_clip_tuwen-tiny"} <= set(topk.columns)
        result = pd.read_csv(two_models / f"results/result{number}.csv")
        assert result.iloc[:, 2].tolist() == topk.loc[topk["rank"] <= 5, "target_id"].tolist()


def test_one_models_setting_reruns_that_model_alone(two_models):
    changed = {**TWO_MODELS, "models": ["tuwen-tiny-rn", {"name": "tuwen-tiny", "train": {"epochs": 2}}]}
    jobs = planned_jobs(snakemake(two_models, "-n", config=changed).stdout)
    assert [w["model"] for rule, w in jobs if rule == "train_model"] == ["tuwen-tiny"]
    recorded = {w["group"] for rule, w in jobs if rule == "record_settings"}
    assert recorded == {"train.tuwen-tiny", "retrieval", "fusion"}
