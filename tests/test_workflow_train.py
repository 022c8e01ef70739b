"""Fine-tuning inside the workflow: it learns, its checkpoint is cn_clip's, and a killed run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import REPO, kill_when, snakemake, snakemake_command, start_in_background
from tuwen.files.parquet import read_features

TRAINING = {
    "demo": {"train_pairs": 400, "queries": 20},
    "train": {"epochs": 6, "batch_size": 32, "val_fraction": 0.25, "warmup_steps": 5, "save_every_steps": 2},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("train")
    snakemake(workdir, config=TRAINING)
    return workdir


def test_training_clearly_beats_the_untrained_model(trained):
    metrics = json.loads((trained / "results/models/tuwen-tiny-rn/finetune/val_metrics.json").read_text())
    before, after = metrics["before"], metrics["after"]
    assert metrics["validation_pairs"] >= 80
    for task in ("t2i", "i2t"):
        assert after[task]["R@5"] >= before[task]["R@5"] + 0.15, (task, before[task], after[task])
    assert after["mean_recall"] >= 2 * before["mean_recall"]
    log = pd.read_csv(trained / "results/models/tuwen-tiny-rn/finetune/train_log.csv")
    assert list(log.columns) == ["step", "epoch", "loss", "lr", "logit_scale", "samples_per_s"]
    assert log["loss"].tail(5).mean() < log["loss"].head(5).mean()


def cn_clip_create_model(checkpoint: Path):
    """cn_clip's `create_model` steps with the small architecture's config files (which cn_clip
    would read only from its own package folder): CLIP(**config), fp16 conversion, weights."""
    from cn_clip.clip.model import CLIP, convert_weights

    config = {}
    for part in ("tuwen-tiny-rn", "tuwen-tiny-bert"):
        config.update(json.loads((REPO / "tuwen/clip/model_configs" / f"{part}.json").read_text()))
    config["vision_layers"] = json.loads(config["vision_layers"])
    model = CLIP(**config)
    convert_weights(model)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu")["state_dict"])
    return model.float()


def test_retrieval_uses_the_fine_tuned_checkpoint_as_cn_clip_loads_it(trained):
    import cn_clip.clip as cn_clip

    card = json.loads((trained / "results/models/tuwen-tiny-rn/finetune/model.json").read_text())
    base = json.loads((trained / "results/models/tuwen-tiny-rn/base/model.json").read_text())
    assert card["tag"] != base["tag"]
    model = cn_clip_create_model(trained / "results/models/tuwen-tiny-rn/finetune/checkpoint.pt")
    shard = read_features(trained / f"results/features/{card['tag']}/t2i_queries/s00000.parquet")
    captions = pd.read_csv(trained / "results/demo/data/附件2/word_test.csv").set_index("text_id")["caption"]
    with torch.inference_mode():
        expected = model.eval().encode_text(cn_clip.tokenize(captions.loc[shard.ids].tolist())).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(shard.embeddings, expected, atol=1e-5)
    # The base weights encode only the judged collections, for results.md's zero-shot rows.
    judged = {"t2i_queries", "t2i_gallery", "i2t_images", "i2t_gallery"}
    assert {p.name for p in (trained / "results/features").glob(f"{base['tag']}/*")} == judged


def test_the_results_table_puts_zero_shot_beside_fine_tuned(trained):
    rows = pd.read_csv(trained / "results/eval/results.csv")
    metrics = json.loads((trained / "results/eval/metrics.json").read_text())
    validation = json.loads((trained / "results/models/tuwen-tiny-rn/finetune/val_metrics.json").read_text())
    assert set(zip(rows["direction"], rows["split"], strict=True)) == {
        (d, s) for d in ("t2i", "i2t") for s in ("validation", "test")
    }
    for row in rows.to_dict("records"):
        task = row["direction"]
        if row["split"] == "test":
            # Fine-tuned on test is what the result tables rank; zero-shot ranks lower here.
            assert row["fine-tuned R@5"] == pytest.approx(100 * metrics[task]["R@5"], abs=0.01)
            assert row["zero-shot R@5"] < row["fine-tuned R@5"]
        else:
            assert row["zero-shot R@1"] == pytest.approx(100 * validation["before"][task]["R@1"], abs=0.01)
            assert row["fine-tuned MR"] > row["zero-shot MR"]
        assert row["kept"] == validation["kept"] != "zero-shot"
    assert "| tuwen-tiny-rn | test (t2i) |" in (trained / "results/eval/results.md").read_text()


@pytest.mark.slow
def test_a_fine_tuning_that_hurts_keeps_the_zero_shot_weights_and_says_so(trained, tmp_path):
    """A learning rate far too high for a model that has learnt: every epoch is worse."""
    learnt = trained / "results/models/tuwen-tiny-rn/finetune/checkpoint.pt"
    config = {
        **TRAINING,
        "models": [{"name": "tuwen-tiny-rn", "checkpoint": str(learnt)}],
        "train": {**TRAINING["train"], "epochs": 1, "lr": 0.5},
    }
    snakemake(tmp_path, config=config)
    validation = json.loads((tmp_path / "results/models/tuwen-tiny-rn/finetune/val_metrics.json").read_text())
    assert validation["epochs"][0]["mean_recall"] < validation["before"]["mean_recall"]
    assert (
        validation["kept"] == "zero-shot"
        and validation["after"]["mean_recall"] == validation["before"]["mean_recall"]
    )
    cards = [
        json.loads((tmp_path / f"results/models/tuwen-tiny-rn/{stage}/model.json").read_text())
        for stage in ("base", "finetune")
    ]
    # The kept weights are those it started from (as cn_clip loads them): the same embeddings.
    base, tuned = (
        read_features(tmp_path / f"results/features/{c['tag']}/t2i_queries/s00000.parquet") for c in cards
    )
    assert base.ids == tuned.ids and np.allclose(base.embeddings, tuned.embeddings, atol=1e-6)
    rows = pd.read_csv(tmp_path / "results/eval/results.csv")
    assert (rows["kept"] == "zero-shot").all()
    test = rows[rows["split"] == "test"]
    assert (test["zero-shot MR"] == test["fine-tuned MR"]).all()


@pytest.mark.slow
def test_killed_training_resumes_where_it_stopped(tmp_path):
    workdir = tmp_path / "run"
    config = {**TRAINING, "train": {**TRAINING["train"], "epochs": 8}}
    process = start_in_background(
        snakemake_command(workdir, "results/models/tuwen-tiny-rn/finetune/checkpoint.pt", config=config)
    )
    state = workdir / "results/models/tuwen-tiny-rn/finetune/state/last.pt"
    log = workdir / "results/logs/train_model/tuwen-tiny-rn.log"
    kill_when(process, lambda: log.exists() and "epoch 2/8" in log.read_text())
    assert state.exists() and not (workdir / "results/models/tuwen-tiny-rn/finetune/checkpoint.pt").exists()

    snakemake(workdir, "--unlock", config=config)
    snakemake(workdir, "results/models/tuwen-tiny-rn/finetune/checkpoint.pt", config=config)
    resumed = log.read_text()
    assert "resumed at step" in resumed and "before training" not in resumed
    step = int(resumed.split("resumed at step ")[1].split()[0])
    steps = pd.read_csv(workdir / "results/models/tuwen-tiny-rn/finetune/train_log.csv")["step"].tolist()
    assert step >= 2 and steps == list(range(1, len(steps) + 1))
    assert not state.exists()
