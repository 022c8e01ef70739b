"""Shared fixtures: tiny generated data, and running the workflow through Snakemake in a temp dir."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO.parent / "shared" / "data" / "teddy2024-sample"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(
    workdir: Path, *args: str, config: dict | None = None, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Run the workflow of this repository with `workdir` as its working directory."""
    command = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    if config:
        # Nested values given with --config arrive as strings; a config file keeps their types.
        workdir.mkdir(parents=True, exist_ok=True)
        config_file = workdir / "test-config.yaml"
        config_file.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        command += ["--configfile", str(config_file)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """Give (rule, wildcards) of every job in a dry run's job list, as Snakemake printed it."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) )", dry_run_output):
        header = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        if not header:
            continue
        wildcards_line = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
        wildcards = {}
        if wildcards_line:
            for pair in wildcards_line.group(1).split(", "):
                key, _, value = pair.partition("=")
                wildcards[key] = value
        jobs.append((header.group(1), wildcards))
    return jobs


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The real contest sample in ../shared; tests that need it skip where it is absent."""
    if not (SAMPLE_DATA / "附件1" / "ImageWordData.csv").exists():
        pytest.skip(f"real sample data not found at {SAMPLE_DATA}")
    return SAMPLE_DATA
