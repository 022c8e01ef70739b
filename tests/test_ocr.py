"""OCR: text rendered into an image is read back; no text and bad files give empty text, not errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.conftest import CPU_AND_CUDA, needs_cuda
from tuwen.files.parquet import read_metadata
from tuwen.report.figures import cjk_font_path
from tuwen.text.ocr import OcrOptions, ocr_engine, ocr_shard, read_image_text


@pytest.fixture(scope="module")
def engine():
    return ocr_engine(threads=2, device="cpu", settings=OcrOptions.defaults())


def rendered(path, text: str) -> None:
    image = Image.new("RGB", (480, 160), "white")
    font = ImageFont.truetype(cjk_font_path(), 48)
    ImageDraw.Draw(image).text((20, 50), text, fill="black", font=font)
    image.save(path)


def test_rendered_chinese_text_is_read_back(engine, tmp_path):
    rendered(tmp_path / "sign.jpg", "新华书店 2024")
    read = read_image_text(engine, str(tmp_path / "sign.jpg"), 10**8)
    assert read.status == "ok"
    assert "新华书店" in read.text.replace(" ", "") and "2024" in read.text
    assert len(read.boxes) == len(read.confidences) >= 1 and all(len(box) == 4 for box in read.boxes)


def test_no_text_and_bad_files_give_empty_text(engine, tmp_path):
    Image.new("RGB", (300, 200), "skyblue").save(tmp_path / "sky.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert read_image_text(engine, str(tmp_path / "sky.jpg"), 10**8).status == "empty"
    broken = read_image_text(engine, str(tmp_path / "broken.jpg"), 10**8)
    assert broken.status == "failed" and broken.text == "" and str(tmp_path / "broken.jpg") in broken.reason


@pytest.mark.parametrize("processes", [1, 2])
def test_a_shard_keeps_a_row_for_every_image(tmp_path, processes):
    rendered(tmp_path / "a.jpg", "图文检索")
    Image.new("RGB", (100, 100), "white").save(tmp_path / "b.png")
    (tmp_path / "c.jpg").write_bytes(b"")
    items = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "digest": ["da", "db", "dc"],
            "source": [str(tmp_path / n) for n in ("a.jpg", "b.png", "c.jpg")],
        }
    )
    items.to_parquet(tmp_path / "list.parquet")
    settings = OcrOptions(detect_side=480, angle_classifier=False)
    table = ocr_shard(tmp_path / "list.parquet", tmp_path / "ocr.parquet", 10**8, settings, 1, processes)
    assert table["status"].tolist() == ["ok", "empty", "failed"]
    written = pd.read_parquet(tmp_path / "ocr.parquet")
    assert written["id"].tolist() == ["a", "b", "c"] and written["digest"].tolist() == ["da", "db", "dc"]
    assert "图文" in written.loc[0, "text"] and json.loads(written.loc[0, "boxes"])
    metadata = read_metadata(tmp_path / "ocr.parquet")
    assert metadata["settings"]["detect_side"] == 480 and metadata["engine"] == "onnxruntime, cpu"


def test_engines_in_processes_work_from_a_script_without_a_main_guard(tmp_path):
    """A Snakemake job's script runs its code at module level: the OCR processes must not
    re-run it (as spawned children do), or every OCR job with processes fails."""
    import subprocess
    import sys

    rendered(tmp_path / "a.jpg", "图文检索")
    rendered(tmp_path / "b.jpg", "新华书店")
    Image.new("RGB", (100, 100), "white").save(tmp_path / "c.png")
    pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "digest": ["1", "2", "3"],
            "source": [str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.png")],
        }
    ).to_parquet(tmp_path / "list.parquet")
    script = tmp_path / "job.py"
    files = f"{str(tmp_path / 'list.parquet')!r}, {str(tmp_path / 'ocr.parquet')!r}"
    script.write_text(
        "from tuwen.text.ocr import OcrOptions, ocr_shard\n"
        f"ocr_shard({files}, 10**8, OcrOptions.defaults(), 1, 2)\n",
        encoding="utf-8",
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert pd.read_parquet(tmp_path / "ocr.parquet")["status"].tolist() == ["ok", "ok", "empty"]


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_the_torch_models_compute_what_onnxruntime_computes(device):
    """rapidocr's three ONNX files as torch modules: the same outputs (fp32) on inputs of
    the shapes the pipeline gives them, the recogniser at two widths (its shape is dynamic)."""
    import numpy as np
    import onnxruntime

    from tuwen.text.ocr_torch import TorchSession, model_paths

    rng = np.random.default_rng(0)
    shapes = {"det": [(1, 3, 320, 480)], "cls": [(3, 3, 48, 192)], "rec": [(2, 3, 48, 320), (1, 3, 48, 96)]}
    for part, path in model_paths().items():
        reference = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        converted = TorchSession(path, device)
        for shape in shapes[part]:
            batch = rng.random(shape, dtype=np.float32)
            expected = reference.run(None, {reference.get_inputs()[0].name: batch})[0]
            (got,) = converted(batch)
            assert got.shape == expected.shape, part
            assert np.abs(got - expected).max() < 1e-3, part


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_ocr_on_torch_reads_what_onnxruntime_reads(engine, tmp_path, device):
    from tuwen.text.ocr_torch import run_models_on_torch

    on_torch = run_models_on_torch(
        ocr_engine(threads=1, device="cpu", settings=OcrOptions.defaults()), device
    )
    for i, text in enumerate(["新华书店 2024", "图文检索", "多模态特征融合"]):
        rendered(tmp_path / f"{i}.jpg", text)
        expected = read_image_text(engine, str(tmp_path / f"{i}.jpg"), 10**8)
        got = read_image_text(on_torch, str(tmp_path / f"{i}.jpg"), 10**8)
        assert got.status == expected.status == "ok"
        assert got.text == expected.text and got.boxes == expected.boxes


def test_ocr_device_says_where_ocr_runs():
    from tuwen.text.ocr import cuda_gpu_seen, ocr_device

    assert ocr_device("cpu") == "cpu"
    assert ocr_device("auto") == ("cuda" if cuda_gpu_seen() else "cpu")
    if not cuda_gpu_seen():
        with pytest.raises(RuntimeError, match="fusion.ocr_device is cuda, but torch sees no CUDA GPU"):
            ocr_device("cuda")


@needs_cuda
def test_a_job_on_cuda_forks_engines_that_read_what_the_cpu_reads(tmp_path):
    """An OCR job chooses the device (auto), then forks its engines: CUDA must not have
    started in the job's process, or no child can use it. A fresh process, as a job is."""
    import subprocess
    import sys

    for i, text in enumerate(["新华书店", "图文检索", "特征融合", "二〇二四"]):
        rendered(tmp_path / f"{i}.jpg", text)
    pd.DataFrame(
        {"id": list("abcd"), "digest": list("1234"), "source": [str(tmp_path / f"{i}.jpg") for i in range(4)]}
    ).to_parquet(tmp_path / "list.parquet")
    cpu = ocr_shard(
        tmp_path / "list.parquet", tmp_path / "cpu.parquet", 10**8, OcrOptions.defaults(), 1, 1, "cpu"
    )
    files = f"{str(tmp_path / 'list.parquet')!r}, {str(tmp_path / 'cuda.parquet')!r}"
    script = tmp_path / "job.py"
    script.write_text(
        "from tuwen.text.ocr import OcrOptions, ocr_device, ocr_shard\n"
        "device = ocr_device('auto')\n"
        "assert device == 'cuda', device\n"
        f"ocr_shard({files}, 10**8, OcrOptions.defaults(), 1, 2, device)\n",
        encoding="utf-8",
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    cuda = pd.read_parquet(tmp_path / "cuda.parquet")
    assert (cuda["status"] == "ok").all() and cuda["text"].tolist() == cpu["text"].tolist()
