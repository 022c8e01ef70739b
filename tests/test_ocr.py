"""OCR: text rendered into an image is read back; no text and bad files give empty text, not errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFont

from tuwen.figures import cjk_font_path
from tuwen.ocr import OcrSettings, ocr_engine, ocr_shard, read_image_text
from tuwen.parquet import read_metadata


@pytest.fixture(scope="module")
def engine():
    return ocr_engine(threads=2, device="cpu")


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
    settings = OcrSettings(detect_side=480)
    table = ocr_shard(tmp_path / "list.parquet", tmp_path / "ocr.parquet", 10**8, settings, 1, processes)
    assert table["status"].tolist() == ["ok", "empty", "failed"]
    written = pd.read_parquet(tmp_path / "ocr.parquet")
    assert written["id"].tolist() == ["a", "b", "c"] and written["digest"].tolist() == ["da", "db", "dc"]
    assert "图文" in written.loc[0, "text"] and json.loads(written.loc[0, "boxes"])
    assert read_metadata(tmp_path / "ocr.parquet")["settings"]["detect_side"] == 480


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
        f"from tuwen.ocr import OcrSettings, ocr_shard\nocr_shard({files}, 10**8, OcrSettings(), 1, 2)\n",
        encoding="utf-8",
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert pd.read_parquet(tmp_path / "ocr.parquet")["status"].tolist() == ["ok", "ok", "empty"]
