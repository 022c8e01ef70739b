"""`make check-gpu` without a GPU: it checks its inputs and plans its runs, says so, exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO


def check_gpu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.check_gpu", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_missing_input_is_named_and_fails(tmp_path):
    result = check_gpu("--sample", str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "work"))
    assert result.returncode == 1
    assert f"{tmp_path / 'nowhere' / '附件1' / 'ImageWordData.csv'} does not exist" in result.stderr


@pytest.mark.slow
def test_without_cuda_it_plans_its_runs_and_says_nothing_was_measured(sample_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: `make check-gpu` measures there instead")
    result = check_gpu("--sample", str(sample_data), "--workdir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr
    assert "no CUDA device here" in result.stdout and "plans all 3 runs' configs" in result.stdout
    # Each run's config was planned: the workflow wrote its settings to check, nothing ran.
    for run in ("cuda", "cpu", "cuda-finetune-fusion"):
        assert (tmp_path / "work" / run / "check-config.yaml").is_file()
        assert not (tmp_path / "work" / run / "results" / "result1.csv").exists()


def test_every_package_carried_to_a_gpu_machine_is_pinned_in_the_lock():
    """bench.device_carry fetches the lock's version of each package a GPU machine lacks."""
    from bench.device_carry import DEVICE_MISSING, locked_versions, normalise

    pins = locked_versions(REPO / "requirements.lock")
    assert [name for name in DEVICE_MISSING if normalise(name) not in pins] == []
    assert pins["snakemake"] and pins["onnx2torch"] and "pulp" not in map(normalise, DEVICE_MISSING)


def test_a_shrunk_image_keeps_its_format_and_fits_the_side(tmp_path):
    from PIL import Image

    from bench.device_carry import shrunk_image

    Image.new("RGB", (1200, 600), "red").save(tmp_path / "photo.jpg", quality=90)
    Image.new("RGBA", (900, 900), "blue").save(tmp_path / "png.jpg", format="PNG")
    Image.new("RGB", (200, 100), "green").save(tmp_path / "small.jpg")
    for name, kind in (("photo.jpg", "JPEG"), ("png.jpg", "PNG")):
        (tmp_path / f"shrunk-{name}").write_bytes(shrunk_image(tmp_path / name, 300))
        with Image.open(tmp_path / f"shrunk-{name}") as shrunk:
            assert shrunk.format == kind and max(shrunk.size) == 300
    assert shrunk_image(tmp_path / "small.jpg", 300) is None


def test_the_cut_font_sets_the_figures_chinese_without_a_missing_glyph(tmp_path, sample_data):
    """The CJK font carried to a GPU machine: the project's own face, cut to the characters
    the figures, the OCR tests and the sample's captions use, found where figures look."""
    import os

    from fontTools.ttLib import TTCollection

    from bench.device_carry import pack_font
    from tuwen.report.figures import CJK_FAMILY

    pack_font(sample_data, tmp_path / "site" / "noto_cjk_sans_otc")
    font_file = tmp_path / "site" / "noto_cjk_sans_otc" / "NotoSansCJK-Regular.ttc"
    assert font_file.stat().st_size < 3 * 2**20
    (face,) = TTCollection(str(font_file)).fonts
    assert face["name"].getDebugName(1) == CJK_FAMILY
    script = (
        "import warnings, matplotlib.pyplot as plt\n"
        "from tuwen.report.figures import use_cjk_font, cjk_font_path\n"
        f"assert cjk_font_path().startswith({str(tmp_path / 'site')!r}), cjk_font_path()\n"
        "use_cjk_font()\n"
        "warnings.simplefilter('error')\n"
        "figure = plt.figure(); figure.suptitle('训练损失 验证集召回率 文本→图像 图文检索')\n"
        f"figure.savefig({str(tmp_path / 'figure.png')!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
