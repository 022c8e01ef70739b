"""Each example config of the field's formats runs on data written in that format, and ranks
the same items as the same data in a plain folder does: CN-CLIP's dataset folder, webdataset
shards, Hugging Face parquet and COCO captions (examples/*.yaml, as the README runs them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.cn_clip_reference import run_cn_clip_evaluation
from tests.conftest import REPO, snakemake
from tests.dataset_formats import (
    hf_row_ids,
    items,
    webdataset_keys,
    write_cn_clip,
    write_coco,
    write_folder,
    write_hf_parquet,
    write_webdataset,
)

pytestmark = pytest.mark.slow

MADE = items(24, seed=3)
PER_SHARD = 10
# Small and fast: the seeded small model, one figure; the same weights in every run.
SMALL = {"models": ["tuwen-tiny-rn"], "figures": {"queries_per_task": 1}, "index": {"enabled": False}}
FOLDER_RUN = {
    "preset": "none",
    "collections": {
        "images": {"images": "images"},
        "captions": {"texts": "captions.csv", "id_column": "text_id", "caption_column": "caption"},
    },
    "tasks": {
        "t2i": {
            "queries": "captions",
            "gallery": "images",
            "k": 10,
            "ground_truth": {"file": "captions.csv", "query_column": "text_id", "gallery_column": "image_id"},
        },
        "i2t": {
            "queries": "images",
            "gallery": "captions",
            "k": 10,
            "ground_truth": {"file": "captions.csv", "query_column": "image_id", "gallery_column": "text_id"},
        },
    },
}


def example(name: str, data_root: Path, **changes) -> dict:
    declared = yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text(encoding="utf-8"))
    return {**declared, **SMALL, "data_root": str(data_root), **changes}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same items as a folder and a captions CSV: the rankings every format must give."""
    root = write_folder(tmp_path_factory.mktemp("folder-data"), MADE)
    run = tmp_path_factory.mktemp("folder-run")
    snakemake(run, config={**FOLDER_RUN, **SMALL, "data_root": str(root)})
    return run


def rankings(run: Path, task: str, number_of: dict[str, int]) -> pd.DataFrame:
    """A task's top-k with every id turned into its item's number."""
    topk = pd.read_parquet(run / "results/retrieval" / task / "topk.parquet")
    topk["query"] = topk["query_id"].map(number_of)
    topk["target"] = topk["target_id"].map(number_of)
    assert topk[["query", "target"]].notna().all().all()
    return topk.sort_values(["query", "rank"]).reset_index(drop=True)


def assert_same_rankings(reference: pd.DataFrame, other: pd.DataFrame, tolerance: float = 1e-5) -> None:
    """Equal cosines rank by rank; equal targets wherever a cosine is clear of its neighbours
    (the seeded model's cosines are close together: a near tie may be broken either way)."""
    reference, other = (t.sort_values(["query", "rank"]).reset_index(drop=True) for t in (reference, other))
    assert len(reference) == len(other) and (reference["query"] == other["query"]).all()
    assert np.allclose(reference["cosine"], other["cosine"], atol=tolerance)
    for _, group in reference.groupby("query"):
        cosines = group["cosine"].to_numpy()
        for i, row in enumerate(group.itertuples()):
            gaps = [abs(cosines[i] - cosines[j]) for j in (i - 1, i + 1) if 0 <= j < len(cosines)]
            if min(gaps, default=1) > tolerance:
                assert other.loc[row.Index, "target"] == row.target, (row.query, row.rank)


def folder_numbers() -> dict[str, int]:
    return {**{i.file_name: i.number for i in MADE}, **{str(i.number): -i.number for i in MADE}}


def test_the_cn_clip_preset_ranks_as_the_folder_and_cn_clip_scores_it(reference, tmp_path):
    root = write_cn_clip(tmp_path / "dataset", "test", MADE)
    write_cn_clip(root, "train", items(12, seed=9))
    run = tmp_path / "run"
    snakemake(run, config=example("cn_clip", root, train={"enabled": False}))
    numbers = {str(i.number): i.number for i in MADE}
    numbers.update({str(1_000_000 + i.number): -i.number for i in MADE})
    metrics = json.loads((run / "results/eval/metrics.json").read_text())
    for task in ("t2i", "i2t"):
        assert_same_rankings(rankings(reference, task, folder_numbers()), rankings(run, task, numbers))
        assert metrics[task] == json.loads((reference / "results/eval/metrics.json").read_text())[task]
        folder = run / "results/eval/cn_clip" / task
        printed = run_cn_clip_evaluation(
            folder / "reference.jsonl", folder / "predictions.jsonl", task, tmp_path / "o.json"
        )
        assert printed["scoreJson"]["r10"] == pytest.approx(100 * metrics[task]["R@10"], abs=1e-9)
        assert json.loads((folder / "output.json").read_text())["ids"] == "as given"  # CN-CLIP's integers
    # The images were read in place: the manifest names the TSV, and no image was unpacked
    # (the browse page's thumbnails apart).
    manifest = pd.read_parquet(run / "results/manifest/test_images/images.parquet")
    assert manifest["path"].str.startswith(str(root / "test_imgs.tsv") + "::").all()
    assert not [p for p in run.rglob("*.jpg") if "thumbs" not in p.parts]


def test_webdataset_shards_rank_as_the_folder_and_a_new_shard_encodes_alone(reference, tmp_path):
    root = write_webdataset(tmp_path / "shards", MADE, PER_SHARD)
    run = tmp_path / "run"
    config = example("webdataset", root)
    snakemake(run, config=config)
    keys = webdataset_keys(MADE, PER_SHARD)
    numbers = {key: number for number, key in keys.items()}
    # A key names both a sample's image and its caption: number captions apart by the task.
    for task in ("t2i", "i2t"):
        topk = rankings(run, task, numbers)
        if task == "t2i":
            topk["query"] = -topk["query"]
        else:
            topk["target"] = -topk["target"]
        assert_same_rankings(rankings(reference, task, folder_numbers()), topk)
    more = items(4, seed=11)
    write_webdataset(root, more, PER_SHARD, first_shard=3)
    features = {p: p.stat().st_mtime_ns for p in (run / "results/features").rglob("*.parquet")}
    snakemake(run, config=config)
    after = {p: p.stat().st_mtime_ns for p in (run / "results/features").rglob("*.parquet")}
    assert all(after[p] == mtime for p, mtime in features.items())  # no shard encoded again
    new = sorted(p.parent.name for p in set(after) - set(features))
    assert new == ["captions", "images"]  # one new shard of each, holding the new samples
    manifest = pd.read_parquet(run / "results/manifest/images/images.parquet")
    assert (manifest["status"] == "ok").sum() == len(MADE) + len(more)


def test_hugging_face_parquet_ranks_as_the_folder(reference, tmp_path):
    root = write_hf_parquet(tmp_path / "hf", MADE) / "data"
    run = tmp_path / "run"
    snakemake(run, config=example("hf_parquet", root))
    numbers = {row: number for number, row in hf_row_ids(MADE).items()}
    for task in ("t2i", "i2t"):
        topk = rankings(run, task, numbers)
        topk["query" if task == "t2i" else "target"] *= -1
        assert_same_rankings(rankings(reference, task, folder_numbers()), topk)


def test_coco_captions_rank_as_the_folder(reference, tmp_path):
    root = write_coco(tmp_path / "coco", MADE)
    run = tmp_path / "run"
    snakemake(run, config=example("coco", root))
    numbers = {**{i.file_name: i.number for i in MADE}, **{str(5000 + i.number): -i.number for i in MADE}}
    for task in ("t2i", "i2t"):
        assert_same_rankings(rankings(reference, task, folder_numbers()), rankings(run, task, numbers))
    metrics = json.loads((run / "results/eval/metrics.json").read_text())
    assert metrics["t2i"]["queries_scored"] == len(MADE)


def test_the_cn_clip_preset_fine_tunes_on_train_and_validates_on_valid(tmp_path):
    root = write_cn_clip(tmp_path / "dataset", "test", MADE[:8])
    write_cn_clip(root, "valid", MADE[8:])
    train = items(12, seed=9)
    write_cn_clip(root, "train", train)
    # A second caption for each of the first six training images, as MUGE has several.
    with open(root / "train_texts.jsonl", "a", encoding="utf-8") as jsonl:
        for n, item in enumerate(train[:6]):
            line = {"text_id": 2_000_000 + n, "text": item.caption + "，特写", "image_ids": [item.number]}
            jsonl.write(json.dumps(line, ensure_ascii=False) + "\n")
    run = tmp_path / "run"
    snakemake(run, config=example("cn_clip", root, train={"epochs": 1, "batch_size": 6}))
    metrics = json.loads((run / "results/models/tuwen-tiny-rn/finetune/val_metrics.json").read_text())
    # Every training caption trains (none held out, none rejected); valid's 16 pairs validate.
    counts = (metrics["train_pairs"], metrics["validation_pairs"], metrics["validated_on"])
    assert counts == (18, 16, "declared")
    assert metrics["before"]["t2i"]["queries_scored"] == 16
    pairs = pd.read_parquet(run / "results/manifest/train_texts/texts.parquet")
    assert (pairs["status"] == "ok").all() and pairs["text_id"].str.endswith("#2").sum() == 6
