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
