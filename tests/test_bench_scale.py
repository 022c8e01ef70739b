"""The scale benchmark: its contest-shaped data, and a small run of the whole comparison."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pandas as pd
import pytest

from bench.contest_folder import add_gallery_captions, add_gallery_images, make_contest_folder, sources_from
from tests.conftest import REPO


def test_contest_folder_has_the_layout_and_no_two_items_alike(tmp_path):
    sources = sources_from(None)  # generated scenes: what a machine without the sample gets
    make_contest_folder(tmp_path, gallery=30, queries=6, sources=sources, workers=1)
    gallery = sorted((tmp_path / "附件2/ImageData").iterdir())
    assert len(gallery) == 30 and len(list((tmp_path / "附件3/ImageData").iterdir())) == 6
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in gallery}) == 30
    captions = pd.read_csv(tmp_path / "附件3/word_data.csv")
    assert len(captions) == 30 and captions["caption"].is_unique and captions["text_id"].is_unique
    queries = pd.read_csv(tmp_path / "附件3/image_test.csv")["image_id"]
    assert set(queries) == {p.name for p in (tmp_path / "附件3/ImageData").iterdir()}

    add_gallery_images(tmp_path, 3, sources, workers=1)
    add_gallery_captions(tmp_path, 3, sources)
    assert len(list((tmp_path / "附件2/ImageData").iterdir())) == 33
    grown = pd.read_csv(tmp_path / "附件3/word_data.csv")
    assert len(grown) == 33 and grown["text_id"].is_unique and grown.head(30).equals(captions)


@pytest.mark.slow
def test_scale_bench_runs_every_step_and_matches_the_bare_baseline(tmp_path):
    report = tmp_path / "table.md"
    command = [sys.executable, "-m", "bench.scale", "--gallery", "120", "--queries", "12"]
    command += ["--workdir", str(tmp_path / "work"), "--report", str(report)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    table = report.read_text(encoding="utf-8")
    assert "equal the baseline's byte for byte: **yes**" in table
    jobs = {
        name: int(count)
        for name, count in re.findall(r"^\| (.+?) \| [0-9.]+ \| (\d+) \|", table, re.MULTILINE)
    }
    assert jobs["workflow: no-op rerun"] == 0
    full = jobs["workflow: full build"]
    assert 0 < jobs["workflow: +1 images (1%)"] < full and 0 < jobs["workflow: +1 captions (1%)"] < full
    # The table says what Snakemake's own start-up costs here, and whether SLURM's scontrol hangs it.
    assert re.search(
        r"Snakemake's own start-up here \(`snakemake --version`, plugins loaded\): [0-9.]+ s; SLURM: ", table
    )
