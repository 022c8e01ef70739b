"""The workflow end to end, through Snakemake, each test in its own temporary working directory."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.cn_clip_reference import cn_clip_recall, run_cn_clip_evaluation
from tests.conftest import SMALL_DEMO, contest_positives, planned_jobs, snakemake
from tuwen.clip.architectures import architecture
from tuwen.clip.cards import weights_tag
from tuwen.clip.models import build_model, checkpoint_digest, load_model, save_checkpoint
from tuwen.data.demo import ALL_SCENES, draw_scene, generate_demo
from tuwen.files.parquet import read_features

NO_TRAINING = {"train": {"enabled": False}}


def read_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.parametrize(
    ("table", "header", "queries_csv", "query_column"),
    [
        (
            "result1.csv",
            ["text_id", "similarity_ranking", "result_image_id"],
            "附件2/word_test.csv",
            "text_id",
        ),
        (
            "result2.csv",
            ["image_id", "similarity_ranking", "result_text_id"],
            "附件3/image_test.csv",
            "image_id",
        ),
    ],
)
def test_result_tables_have_contest_format_and_query_order(
    demo_run, table, header, queries_csv, query_column
):
    rows = read_rows(demo_run / "results" / table)
    assert rows[0] == header
    queries = pd.read_csv(demo_run / "results/demo/data" / queries_csv)[query_column].tolist()
    assert [r[0] for r in rows[1::5]] == queries
    assert [r[1] for r in rows[1:]] == ["1", "2", "3", "4", "5"] * len(queries)
    for start in range(1, len(rows), 5):
        assert len({r[2] for r in rows[start : start + 5]}) == 5


@pytest.mark.parametrize(("task", "gallery"), [("t2i", "t2i_gallery"), ("i2t", "i2t_gallery")])
def test_topk_equals_brute_force_on_the_written_features(demo_run, task, gallery):
    """Each rank holds the brute-force score of that rank (float64 over every written shard), up
    to float32 noise: identical captions embed identically, and BLAS may round their float32
    scores apart by an ulp, so equal items may trade places, but no better item is missed
    (ties by id are tuwen.ranking.topk's, tested on exact ties in test_retrieval)."""
    results = demo_run / "results"
    queries = read_features(results / "retrieval" / task / "queries.parquet")
    shards = [read_features(p) for p in sorted((results / "features").glob(f"*/{gallery}/*.parquet"))]
    ids = [i for s in shards for i in s.ids]
    embeddings = np.concatenate([s.embeddings for s in shards]).astype(np.float64)
    scores = queries.embeddings.astype(np.float64) @ embeddings.T
    column = {item: n for n, item in enumerate(ids)}
    topk = pd.read_parquet(results / "retrieval" / task / "topk.parquet")
    got = {q: g["target_id"].tolist() for q, g in topk.groupby("query_id", sort=False)}
    assert list(got) == queries.ids
    for row, query in zip(scores, queries.ids, strict=True):
        best = np.sort(row)[::-1][:10]
        found = np.array([row[column[item]] for item in got[query]])
        assert found == pytest.approx(best, abs=1e-6), query


@pytest.mark.parametrize(("task", "collection"), [("t2i", "t2i_queries"), ("i2t", "i2t_images")])
def test_query_embeddings_are_the_encoded_rows_bit_for_bit(demo_run, task, collection):
    results = demo_run / "results"
    queries = read_features(results / "retrieval" / task / "queries.parquet")
    shards = [read_features(p) for p in (results / "features").glob(f"*/{collection}/*.parquet")]
    encoded = {i: row for shard in shards for i, row in zip(shard.ids, shard.embeddings, strict=True)}
    assert len(queries.ids) == 20
    for query_id, row in zip(queries.ids, queries.embeddings, strict=True):
        assert np.array_equal(row, encoded[query_id]), query_id


def test_recall_equals_cn_clip_own_evaluation(demo_run, tmp_path):
    metrics = json.loads((demo_run / "results/eval/metrics.json").read_text())
    truth = demo_run / "results/demo/data/ground_truth.csv"
    for task in ("t2i", "i2t"):
        topk = pd.read_parquet(demo_run / "results/retrieval" / task / "topk.parquet")
        reference = cn_clip_recall(topk, contest_positives(truth, task, tmp_path), task, tmp_path)
        for key, value in reference.items():
            assert metrics[task][key] == pytest.approx(value, abs=1e-9)


def test_the_run_writes_cn_clip_evaluation_files_that_cn_clip_scores_as_tuwen_does(demo_run, tmp_path):
    metrics = json.loads((demo_run / "results/eval/metrics.json").read_text())
    for task in ("t2i", "i2t"):
        folder = demo_run / "results/eval/cn_clip" / task
        written = json.loads((folder / "output.json").read_text())
        printed = run_cn_clip_evaluation(
            folder / "reference.jsonl", folder / "predictions.jsonl", task, tmp_path / f"{task}.json"
        )
        assert printed["success"] and printed["scoreJson"] == pytest.approx(written["scoreJson"], abs=1e-9)
        for k in (1, 5, 10):
            assert printed["scoreJson"][f"r{k}"] == pytest.approx(100 * metrics[task][f"R@{k}"], abs=1e-9)
        # The demo's ids are file names and word ids: numbered, and each number's id given.
        ids = pd.read_csv(folder / "ids.csv", dtype={"id": str})
        lines = (folder / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == metrics[task]["queries_scored"] and written["ids"].startswith("numbered")
        first = json.loads(lines[0])
        query_field = "text_id" if task == "t2i" else "image_id"
        numbered = ids[ids["side"] == "query"].set_index("cn_clip_id")["id"]
        topk = pd.read_parquet(demo_run / "results/retrieval" / task / "topk.parquet")
        best = topk[(topk["query_id"] == numbered[first[query_field]]) & (topk["rank"] == 1)]["target_id"]
        gallery = ids[ids["side"] == "gallery"].set_index("cn_clip_id")["id"]
        assert gallery[next(v for key, v in first.items() if key != query_field)[0]] == best.item()


def test_every_input_id_is_encoded_rejected_or_ignored(demo_run):
    accounting = pd.read_csv(demo_run / "results/summary/accounting.csv").set_index("collection")
    assert (
        accounting["inputs"] == accounting["accepted"] + accounting["rejected"] + accounting["ignored"]
    ).all()
    encoded = accounting.dropna(subset=["encoded"])
    assert (encoded["encoded"] == encoded["accepted"]).all() and len(encoded) == 6
    assert accounting.loc["train_texts", "rejected"] == 2
    rejects = pd.read_csv(demo_run / "results/manifest/train_texts/rejects.csv")
    assert set(rejects["reason_code"]) == {"image_missing"} and len(rejects) == 2


def test_figures_and_report(demo_run):
    for task in ("t2i", "i2t"):
        for name in ("query_0.png", "query_2.png", "score_histogram.png"):
            assert (demo_run / "results/figures" / task / name).read_bytes()[:4] == b"\x89PNG"
        assert "font lacks a glyph" not in (demo_run / f"results/logs/query_figures/{task}.log").read_text()
    snakemake(demo_run, "--report", "results/report.html", config=SMALL_DEMO)
    report = (demo_run / "results/report.html").read_text(encoding="utf-8")
    assert "metrics.csv" in report and "query_0.png" in report
    assert not (demo_run / "results/retrieval/t2i/similarity.npy").exists()


def test_adding_images_or_captions_encodes_only_the_new_shard(tmp_path):
    data = tmp_path / "contest"
    generate_demo(data, train_pairs=20, queries=10, seed=0)
    config = {"data_root": str(data), "shards": {"size": 8, "text_size": 64}, **NO_TRAINING}
    run = tmp_path / "run"
    first = snakemake(run, "results/result1.csv", "results/result2.csv", config=config)
    assert "tuwen: the run is complete." in first.stdout  # the closing summary
    old_encodes = [w for rule, w in planned_jobs(first.stderr) if rule == "encode_image_shard"]
    assert sorted((w["col"], w["shard"]) for w in old_encodes if w["col"] == "t2i_gallery") == [
        ("t2i_gallery", "s00000"),
        ("t2i_gallery", "s00001"),
        ("t2i_gallery", "s00002"),
    ]
    old_features = sorted((run / "results/features").glob("*/*/*.parquet"))
    old_mtimes = [p.stat().st_mtime_ns for p in old_features]
    # A new shard size applies to shards made from now on: the finished run stays as it is.
    config["shards"] = {"size": 2, "text_size": 64}
    resized = snakemake(run, "results/result1.csv", "results/result2.csv", "-n", config=config)
    assert planned_jobs(resized.stdout) == []

    for i in range(3):
        draw_scene(ALL_SCENES[i], random.Random(100 + i)).save(
            data / "附件2/ImageData" / f"Image14009999-{i:04d}.jpg", format="JPEG"
        )
    # One core this time: the encode job's decode workers follow the cores it is given.
    second = snakemake(run, "results/result1.csv", "results/result2.csv", "--cores", "1", config=config)
    jobs = planned_jobs(second.stderr)
    encodes = sorted((w["col"], w["shard"]) for rule, w in jobs if rule.startswith("encode_"))
    assert encodes == [("t2i_gallery", "s00003"), ("t2i_gallery", "s00004")]
    registry = run / "results/shards/t2i_gallery/lists"
    assert [len(pd.read_parquet(registry / f"{shard}.parquet")) for shard in ("s00003", "s00004")] == [2, 1]
    assert [w["task"] for rule, w in jobs if rule == "search_topk"] == ["t2i"]
    assert [p.stat().st_mtime_ns for p in old_features] == old_mtimes
    assert len(pd.read_csv(run / "results/result1.csv")) == 50
    logs = run / "results/logs"
    assert "unchanged files reused from the last scan" in (logs / "ingest_images/t2i_gallery.log").read_text()
    (new_log,) = (logs / "encode").glob("*/t2i_gallery/s00004.log")
    assert "1 threads, 1 decode workers" in new_log.read_text()
    assert (
        "2 threads, 2 decode workers" in next((logs / "encode").glob("*/t2i_gallery/s00000.log")).read_text()
    )

    with open(data / "附件3/word_data.csv", "a", encoding="utf-8") as handle:
        handle.write("Word-9999001,一个新的红色圆形\nWord-9999002,一个新的蓝色方块\n")
    third = snakemake(run, "results/result1.csv", "results/result2.csv", config=config)
    jobs = planned_jobs(third.stderr)
    assert [(w["tset"], w["shard"]) for rule, w in jobs if rule.startswith("encode_")] == [
        ("i2t_gallery", "s00001")
    ]
    assert [w["task"] for rule, w in jobs if rule == "search_topk"] == ["i2t"]
    assert [p.stat().st_mtime_ns for p in old_features] == old_mtimes
    (new_texts,) = (run / "results/features").glob("*/i2t_gallery/s00001.parquet")
    assert read_features(new_texts).ids == ["Word-9999001", "Word-9999002"]
    gallery_size = len(pd.read_csv(data / "附件3/word_data.csv"))
    assert f"over {gallery_size} gallery items" in (logs / "search_topk/i2t.log").read_text()


def test_local_checkpoint_is_encoded_with_its_own_weights(tmp_path):
    data = tmp_path / "contest"
    generate_demo(data, train_pairs=20, queries=10, seed=0)
    arch = architecture("tuwen-tiny")
    checkpoint = tmp_path / "my-model.pt"
    save_checkpoint(build_model(arch, seed=11), checkpoint, arch)
    tag = weights_tag(arch.name, checkpoint_digest(checkpoint))
    target = f"results/features/{tag}/t2i_queries/s00000.parquet"
    snakemake(
        tmp_path / "run",
        target,
        config={
            "data_root": str(data),
            "models": [{"name": "tuwen-tiny", "checkpoint": str(checkpoint)}],
            **NO_TRAINING,
        },
    )
    shard = read_features(tmp_path / "run" / target)
    captions = pd.read_csv(data / "附件2/word_test.csv")["caption"].tolist()

    import torch
    from cn_clip.clip import tokenize

    with torch.inference_mode():
        expected = load_model(arch, checkpoint).encode_text(tokenize(captions)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert shard.metadata["model_tag"] == tag
    assert np.allclose(shard.embeddings, expected, atol=1e-5)


def test_offline_pretrained_model_fails_with_one_clear_line(tmp_path):
    result = snakemake(
        tmp_path,
        "results/models/ViT-B-16/base/model.json",
        check=False,
        config={"models": ["ViT-B-16"], "weights_dir": str(tmp_path / "weights")},
    )
    assert result.returncode != 0
    assert f"tuwen error: pretrained weights for ViT-B-16 are not at {tmp_path / 'weights'}" in result.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"shards": {"sise": 3}}, "sise"),
        ({"encode": {"batch_size": "many"}}, "batch_size"),
        ({"data_root": "/no/such/folder"}, "does not hold the contest layout"),
        ({"model": "ViT-B-16"}, "config key 'model' is now part of `models`"),
        ({"models": ["tuwen-tiny", {"name": "tuwen-tiny"}]}, "tuwen-tiny given twice"),
    ],
)
def test_bad_config_is_refused_before_any_job(tmp_path, config, message):
    result = snakemake(tmp_path, "-n", config=config, check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.sample
@pytest.mark.slow
def test_real_sample_gives_both_tables_and_names_missing_images(sample_data, tmp_path):
    snakemake(tmp_path, config={"data_root": str(sample_data), **NO_TRAINING})
    for table in ("result1.csv", "result2.csv"):
        rows = pd.read_csv(tmp_path / "results" / table)
        assert len(rows) == 500 and rows.iloc[:, 0].nunique() == 100
    rejects = pd.read_csv(tmp_path / "results/manifest/train_texts/rejects.csv")
    assert set(rejects["id"]) == {"Image14001001-2540.jpg", "Image14001005-3174.jpg"}
    gallery = pd.read_parquet(tmp_path / "results/manifest/t2i_gallery/images.parquet")
    assert gallery.loc[gallery["image_id"] == "Image14001007-1551.jpg", "format"].item() == "GIF"
    encoded = {
        i
        for p in (tmp_path / "results/features").glob("*/t2i_gallery/*.parquet")
        for i in read_features(p).ids
    }
    assert "Image14001007-1551.jpg" in encoded and len(encoded) == 200


def test_the_run_ends_with_a_summary_of_what_to_look_at(demo_run):
    from tuwen.finished.reader import read_finished
    from tuwen.report.summary import run_summary

    summary = run_summary(read_finished(demo_run).declared, demo_run)
    metrics = json.loads((demo_run / "results/eval/metrics.json").read_text())
    accounting = pd.read_csv(demo_run / "results/summary/accounting.csv")
    assert "results/result1.csv (text → image), results/result2.csv (image → text)" in summary
    for task, direction in (("t2i", "text → image"), ("i2t", "image → text")):
        m = metrics[task]
        assert f"{direction}: R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  R@10 {m['R@10']:.3f}" in summary
    assert f"left out: {accounting['rejected'].sum()} inputs rejected at ingest" in summary
    assert "open results/browse/index.html" in summary and "python -m tuwen serve" in summary
