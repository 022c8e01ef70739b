"""The same workflow on a real one-node SLURM cluster, through snakemake-executor-plugin-slurm.

Needs root and ../shared/tools/slurm (which installs and starts slurmctld, slurmd, slurmdbd
with one fake GPU); skipped otherwise. `make test-cluster` runs it; `.ci/run` calls that.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, snakemake, snakemake_command

pytestmark = pytest.mark.cluster
HARNESS = REPO.parent / "shared" / "tools" / "slurm"
CONFIG = {"demo": {"train_pairs": 60, "queries": 20}, "train": {"epochs": 2}}
GPU_RULES = {"encode_image_shard", "encode_text_shard", "train_model"}


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("the SLURM harness needs root")
    if not (HARNESS / "start-slurm.sh").exists():
        pytest.skip(f"SLURM harness not found at {HARNESS}")
    subprocess.run(
        ["timeout", "600", "bash", str(HARNESS / "start-slurm.sh")], check=True, capture_output=True
    )
    yield
    subprocess.run(["timeout", "120", "bash", str(HARNESS / "stop-slurm.sh")], capture_output=True)


def run_on_slurm(workdir: Path, *targets: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow through profiles/slurm, bounded so a hang fails instead of waiting forever."""
    profile = [
        "--workflow-profile",
        str(REPO / "profiles/slurm"),
        "--slurm-init-seconds-before-status-checks",
        "1",
        # The harness's one node has this machine's 2 CPUs; heavy rules ask for 8 by default.
        "--max-threads",
        "2",
    ]
    command = [
        "timeout",
        "1200",
        *snakemake_command(workdir, *profile, *targets),
        "--configfile",
        str(workdir / "test-config.yaml"),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-5000:]
    return result


def submitted_jobs(log: str) -> dict[str, str]:
    """Give SLURM job id -> rule, from Snakemake's own submission lines."""
    pattern = r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/"
    return dict(re.findall(pattern, log))


def accounting(job_ids: list[str], field: str = "AllocTRES") -> dict[str, str]:
    """Give SLURM job id -> one sacct field (allocated TRES by default)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", f"--format=JobID,{field}", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("|")[0]: line.split("|")[1] for line in out.splitlines() if line}


# Time limits follow the default shard sizes (rules/common.smk, shard_runtime):
# 10 min + 0.1 s per image of 16,384, and 10 min + 0.01 s per caption of 65,536.
ENCODE_TIME_LIMITS = {"encode_image_shard": "00:38:00", "encode_text_shard": "00:21:00"}


def test_demo_through_slurm_equals_the_local_run(slurm_cluster, tmp_path):
    local = tmp_path / "local"
    snakemake(local, config=CONFIG)
    cluster = tmp_path / "cluster"
    snakemake(cluster, "-n", config=CONFIG)  # writes the config file
    result = run_on_slurm(cluster)

    jobs = submitted_jobs(result.stderr)
    rules = set(jobs.values())
    assert {"encode_image_shard", "encode_text_shard", "train_model", "ingest_images"} <= rules
    assert not rules & {"result_table", "search_topk", "query_figures"}  # small jobs stay local
    tres = accounting(list(jobs))
    assert set(tres) == set(jobs)
    for job_id, rule in jobs.items():
        assert ("gres/gpu=1" in tres[job_id]) == (rule in GPU_RULES), (rule, tres[job_id])
    limits = accounting(list(jobs), "Timelimit")
    for job_id, rule in jobs.items():
        if rule in ENCODE_TIME_LIMITS:
            assert limits[job_id] == ENCODE_TIME_LIMITS[rule], (rule, limits[job_id])
    for table in ("result1.csv", "result2.csv"):
        assert (cluster / "results" / table).read_bytes() == (local / "results" / table).read_bytes()


def test_failed_slurm_job_names_its_log_and_a_rerun_redoes_only_it(slurm_cluster, tmp_path):
    workdir = tmp_path / "run"
    broken = {**CONFIG, "train": {"epochs": 1, "precision": "amp"}}  # AMP needs CUDA: the job fails
    snakemake(workdir, "-n", config=broken)
    failed = run_on_slurm(workdir, "results/models/tuwen-tiny-rn/finetune/checkpoint.pt", check=False)
    assert failed.returncode != 0
    assert "results/logs/train_model/tuwen-tiny-rn.log" in failed.stderr
    assert "needs a CUDA device" in (workdir / "results/logs/train_model/tuwen-tiny-rn.log").read_text()

    snakemake(workdir, "-n", config={**CONFIG, "train": {"epochs": 1}})
    rerun = run_on_slurm(workdir, "results/models/tuwen-tiny-rn/finetune/checkpoint.pt")
    assert set(submitted_jobs(rerun.stderr).values()) == {"train_model"}
    assert (workdir / "results/models/tuwen-tiny-rn/finetune/checkpoint.pt").exists()
