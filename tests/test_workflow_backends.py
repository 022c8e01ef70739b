"""What runs the model on a CPU: the exported towers in ONNX Runtime, and int8 under its own tag."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq

from tests.conftest import REPO, SMALL_DEMO, snakemake
from tuwen.clip.onnx_towers import INT8_IMAGE_COSINE

# A small ViT, untrained: its int8 text tower holds up; its image one only on some CPUs.
INT8_RUN = {**SMALL_DEMO, "models": ["tuwen-tiny"], "train": {"enabled": False}, "encode": {"int8": True}}


def test_an_int8_run_encodes_under_its_own_tag_and_serves_through_onnx_runtime(tmp_path):
    snakemake(tmp_path, config=INT8_RUN)
    card = json.loads((tmp_path / "results/models/tuwen-tiny/base/model.json").read_text())
    assert card["int8"] and card["tag"].endswith("-int8")
    towers = json.loads((tmp_path / "results/models/tuwen-tiny/base/towers/towers.json").read_text())
    # The image tower is int8 only where int8 measured up on this CPU (see test_onnx_towers).
    image = "int8" if towers["int8_cosine_to_torch"]["image"] >= INT8_IMAGE_COSINE else "fp32"
    assert towers["tag"] == card["tag"] and towers["precision"] == {"text": "int8", "image": image}
    features = tmp_path / "results/features" / card["tag"]
    for collection, precision in (("t2i_queries", "int8"), ("t2i_gallery", image), ("i2t_gallery", "int8")):
        shards = sorted((features / collection).glob("*.parquet"))
        assert shards, collection
        for shard in shards:
            metadata = json.loads(pq.read_schema(shard).metadata[b"tuwen"])
            assert (metadata["precision"], metadata["backend"]) == (precision, "onnxruntime"), shard
            assert metadata["model_tag"] == card["tag"]
    assert (tmp_path / "results/result1.csv").stat().st_size > 0
    # The query is encoded as the gallery was: an int8 model always through ONNX Runtime.
    command = ["search", "一个红色的圆形", "--run", str(tmp_path), "--backend", "torch"]
    search = subprocess.run(
        [sys.executable, "-m", "tuwen", *command], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert search.returncode == 0, search.stderr
    assert "by onnxruntime" in search.stderr and len(search.stdout.strip().splitlines()) == 5
