"""Shared fixtures: tiny generated data, and running the workflow through Snakemake in a temp dir."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tuwen.run.declaration import IMAGES, TEXTS

REPO = Path(__file__).resolve().parents[1]

# `make test` checks the CPU contract on any machine: the workflow's numbers against CPU
# references (1e-5). On a GPU machine `encode.device: auto` would encode in fp16 there, and
# on an H200 five tests failed for that alone. So the tests, and every workflow, job and
# server they start, see no GPU; the GPU paths are `make check-gpu`'s, which sets
# TUWEN_TESTS_ON_CUDA=1 to run the tests' CUDA halves.
if os.environ.get("TUWEN_TESTS_ON_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import torch  # noqa: E402 - after the line above, which decides what torch may see

# A device test's CUDA half: skipped here, run by `make check-gpu`.
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device seen (`make check-gpu` runs the CUDA halves)"
)
# The devices of a test that asserts the same on the CPU (here) and on CUDA (check-gpu).
CPU_AND_CUDA = ["cpu", pytest.param("cuda", marks=needs_cuda)]
# The real contest sample: TUWEN_SAMPLE names it (CI sets it); a checkout beside the shared
# data folder finds it there too.
SAMPLE_DATA = Path(os.environ.get("TUWEN_SAMPLE") or REPO.parent / "shared" / "data" / "teddy2024-sample")
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake_command(workdir: Path, *args: str, config: dict | None = None) -> list[str]:
    """Give the command that runs this repository's workflow in `workdir` (config written there)."""
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
        # --configfile takes several values, so it comes last, after any targets.
        workdir.mkdir(parents=True, exist_ok=True)
        config_file = workdir / "test-config.yaml"
        config_file.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        command += ["--configfile", str(config_file)]
    return command


def snakemake(
    workdir: Path, *args: str, config: dict | None = None, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Run the workflow of this repository with `workdir` as its working directory."""
    result = subprocess.run(
        snakemake_command(workdir, *args, config=config), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def start_in_background(command: list[str]) -> subprocess.Popen:
    """Start a command in its own process group, so that all of it can be killed at once."""
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> None:
    """Kill -9 the whole process group of `process` as soon as `ready()` is true."""
    deadline = time.time() + timeout
    while time.time() < deadline and not ready():
        assert process.poll() is None, "the workflow ended before it could be killed"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """Give (rule, wildcards) of every job in Snakemake's printed job list."""
    return [(rule, wildcards) for rule, wildcards, _ in planned_jobs_with_reasons(output)]


def planned_jobs_with_reasons(output: str) -> list[tuple[str, dict[str, str], str]]:
    """Give (rule, wildcards, reason) of every job in Snakemake's printed job list."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) )", output):
        header = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        if not header:
            continue
        wildcards_line = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
        wildcards = {}
        if wildcards_line:
            for pair in wildcards_line.group(1).split(", "):
                key, _, value = pair.partition("=")
                wildcards[key] = value
        reason = re.search(r"^\s+reason: (.*)$", block, re.MULTILINE)
        jobs.append((header.group(1), wildcards, reason.group(1) if reason else ""))
    return jobs


# The default workflow (embedded demo, with training), smaller: run once per test session.
SMALL_DEMO = {
    "demo": {"train_pairs": 60, "queries": 20},
    "train": {"epochs": 2},
    # Zero-shot tags of the demo's photos by its shapes and colours (the demo writes labels.txt).
    "tags": {"labels": "labels.txt", "templates": ["一张{}的照片", "{}"]},
}


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A finished run of the default workflow on a small demo, shared by the tests that read it."""
    workdir = tmp_path_factory.mktemp("demo")
    snakemake(workdir, config=SMALL_DEMO)
    return workdir


# The demo with every stage on (training, fusion with OCR): what the slow tests share.
FUSION_DEMO = {
    **SMALL_DEMO,
    "fusion": {"enabled": True, "weights": [0.5, 1.0], "temperatures": [0.05]},
    "duplicates": {"enabled": True},
}


@pytest.fixture(scope="session")
def fusion_run(tmp_path_factory) -> Path:
    """A finished run of the small demo with training, fusion and OCR on; tests only read it."""
    workdir = tmp_path_factory.mktemp("fusion")
    snakemake(workdir, config=FUSION_DEMO)
    return workdir


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The real contest sample in ../shared; tests that need it skip where it is absent."""
    if not (SAMPLE_DATA / "附件1" / "ImageWordData.csv").exists():
        pytest.skip(f"real sample data not found at {SAMPLE_DATA}")
    return SAMPLE_DATA


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (nothing downloads a browser); .ci/run installs it and makes its absence fail."""
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found is None:
        message = "no Chromium found (apt-get install chromium); .ci/run installs it"
        if os.environ.get("TUWEN_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def contest_positives(truth, task: str, folder: Path) -> dict[str, set[str]]:
    """Each query's true targets from contest-style `text_id,image_id` pairs (a table or a
    CSV path), read as the workflow reads them (tuwen.ranking.recall.read_positives)."""
    import pandas as pd

    from tuwen.ranking.recall import read_positives
    from tuwen.run.declaration import contest_ground_truth

    path = Path(truth) if not isinstance(truth, pd.DataFrame) else folder / f"truth-{task}.csv"
    if isinstance(truth, pd.DataFrame):
        truth.to_csv(path, index=False)
    return read_positives(contest_ground_truth(str(path), TEXTS if task == "t2i" else IMAGES))


def config_with(changes: dict) -> dict:
    """Give the schema's default config with `changes` merged in, section by section: what the
    workflow's validation makes of a config that sets only those keys."""
    from tuwen.run.schema import load_schema, schema_defaults

    def merged(base: dict, given: dict) -> dict:
        return {
            **base,
            **{
                key: merged(base[key], value)
                if isinstance(value, dict)
                and isinstance(base.get(key), dict)
                and key not in ("collections", "tasks")
                else value
                for key, value in given.items()
            },
        }

    return merged(schema_defaults(load_schema()), changes)
