"""`python -m tuwen search`: a finished run answers a new query without Snakemake or re-encoding."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO


def tuwen(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuwen", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def printed_hits(stdout: str) -> pd.DataFrame:
    rows = [line.split("\t") for line in stdout.strip().splitlines()]
    hits = pd.DataFrame(rows, columns=["rank", "score", "cosine", "target_id", "what"])
    return hits.astype({"rank": int, "score": float, "cosine": float})


def assert_same_ranking(hits: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same scores rank by rank; same ids wherever the run's scores are not tied within 1e-5."""
    assert np.allclose(hits["cosine"], expected["cosine"], atol=1e-4)
    gaps = np.diff(expected["cosine"].to_numpy())
    for i, target in enumerate(expected["target_id"]):
        before = abs(gaps[i - 1]) if i > 0 else 1.0
        after = abs(gaps[i]) if i < len(gaps) else 1.0
        if min(before, after) > 1e-5:
            assert hits["target_id"].iloc[i] == target


def test_text_query_ranks_as_the_run_did(demo_run):
    topk = pd.read_parquet(demo_run / "results/retrieval/t2i/topk.parquet")
    queries = pd.read_parquet(demo_run / "results/manifest/t2i_queries/texts.parquet")
    query = queries[queries["status"] == "ok"].iloc[3]
    result = tuwen("search", query["caption"], "--run", str(demo_run))
    assert result.returncode == 0, result.stderr
    hits = printed_hits(result.stdout)
    expected = topk[topk["query_id"] == query["text_id"]].sort_values("rank").head(5)
    assert list(hits["rank"]) == [1, 2, 3, 4, 5]
    assert_same_ranking(hits, expected)
    assert all(what.endswith(target) for what, target in zip(hits["what"], hits["target_id"], strict=True))


def test_torch_and_onnx_runtime_give_a_query_the_same_ranking(demo_run):
    """The run's export is exact: `--backend torch` and the default (ONNX Runtime) agree."""
    towers = json.loads((demo_run / "results/models/tuwen-tiny-rn/finetune/towers/towers.json").read_text())
    assert towers["exact"] and towers["precision"] == {"text": "fp32", "image": "fp32"}
    answers = {}
    for backend in ("torch", "onnxruntime"):
        result = tuwen("search", "左上角有一个红色的圆形", "--run", str(demo_run), "--backend", backend)
        assert result.returncode == 0, result.stderr
        assert f"by {backend}" in result.stderr
        answers[backend] = printed_hits(result.stdout)
    assert_same_ranking(answers["onnxruntime"], answers["torch"])


def test_image_query_ranks_as_the_run_did_and_prints_captions(demo_run):
    topk = pd.read_parquet(demo_run / "results/retrieval/i2t/topk.parquet")
    images = pd.read_parquet(demo_run / "results/manifest/i2t_images/images.parquet").set_index("image_id")
    query_id = topk["query_id"].iloc[0]
    result = tuwen(
        "search",
        "--image",
        str(demo_run / images.loc[query_id, "path"]),
        "--top",
        "3",
        "--run",
        str(demo_run),
    )
    assert result.returncode == 0, result.stderr
    hits = printed_hits(result.stdout)
    assert_same_ranking(hits, topk[topk["query_id"] == query_id].sort_values("rank").head(3))
    captions = pd.read_parquet(demo_run / "results/manifest/i2t_gallery/texts.parquet").set_index("text_id")
    assert list(hits["what"]) == [captions.loc[t, "caption"] for t in hits["target_id"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["一只橙色的猫", "--run", "{empty}"], "holds no finished run"),
        (["--image", "{empty}/no.jpg", "--run", "{run}"], "does not exist"),
        (
            ["一只橙色的猫", "--run", "{run}", "--gallery", "train_textz"],
            "no features of gallery 'train_textz'",
        ),
    ],
)
def test_problems_are_one_clear_line(demo_run, tmp_path, args, message):
    result = tuwen("search", *[a.format(empty=tmp_path, run=demo_run) for a in args])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("tuwen search: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
