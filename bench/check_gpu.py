"""`make check-gpu`: every GPU path of the project, checked by one prepared command (≤ 8 minutes
on one H100/H200), printing one table.

0. The device-path tests of tests/test_encode.py on CUDA (nvjpeg against PIL, the pixel
   limit from the header, the resize fallback): the same assertions `make test` runs on the CPU.
1. `bench.encode` on CUDA, ViT-B-16 and ViT-H-14 (random weights): end to end against the
   forward pass alone, both decode paths (PIL in workers; nvjpeg + resize on the GPU), and
   the GPU path's smallest cosine to the PIL path's (numpy's min: a NaN shows).
2. The workflow on the real sample with a random ViT-B-16 saved as a local checkpoint:
   - retrieval encoded on CUDA (fp16, GPU JPEG decoding) and the same checkpoint's retrieval
     encoded on this machine's CPU (fp32): the top-1 agreement of their tables (≥ 0.98);
   - one epoch of fine-tuning with AMP on CUDA (samples/s, peak GPU memory), then fusion with
     OCR (`fusion.ocr_device: auto`: the log says where OCR ran), and the run's R@5.

On a machine without CUDA it checks that its inputs exist (the sample, the architectures,
the workflow), says that nothing was measured, and exits 0; a missing input exits 1.

Usage: python -m bench.check_gpu [--sample DIR] [--workdir DIR] [--cores N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pandas as pd
import yaml

from bench.scale import snakemake_command

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = REPO.parent / "shared" / "data" / "teddy2024-sample"
ENCODE_IMAGES = {"ViT-B-16": 4096, "ViT-H-14": 1024}


def missing_inputs(sample: Path) -> list[str]:
    """Give what this check needs and cannot find (empty: ready)."""
    from tuwen.models import ModelError, architecture

    problems = []
    for needed in (
        "附件1/ImageWordData.csv",
        "附件2/word_test.csv",
        "附件3/word_data.csv",
        "ground_truth.csv",
    ):
        if not (sample / needed).is_file():
            problems.append(f"the real sample is incomplete: {sample / needed} does not exist")
    for name in ENCODE_IMAGES:
        try:
            architecture(name)
        except ModelError as error:
            problems.append(f"architecture {name}: {error}")
    if not (REPO / "Snakefile").is_file():
        problems.append(f"no Snakefile in {REPO}")
    return problems


def gpu_test_rows() -> list[tuple[str, str]]:
    """Run the device-path tests on CUDA (the CPU runs of the same tests are in `make test`)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_encode.py",
            "-k",
            "cuda",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    verdict = (
        "ok" if result.returncode == 0 and "passed" in summary and "skipped" not in summary else "FAILED"
    )
    return [
        (
            "device-path tests on CUDA (tests/test_encode.py -k cuda: nvjpeg vs PIL, pixel limit, "
            "resize fallback)",
            f"{summary} ({verdict})",
        )
    ]


def encode_rows(sample: Path) -> list[tuple[str, str]]:
    """Run bench.encode on CUDA for each architecture; give its table rows, labelled."""
    rows = []
    for arch, images in ENCODE_IMAGES.items():
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.encode",
                "--arch",
                arch,
                "--device",
                "cuda",
                "--images",
                str(images),
                "--sample",
                str(sample),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            rows.append((f"bench.encode {arch}", f"FAILED: {result.stderr.strip().splitlines()[-1:]}"))
            continue
        for line in result.stdout.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 4 and cells[1].replace(".", "", 1).isdigit():
                label, rate, ratio, cosine = cells
                rows.append(
                    (
                        f"encode {arch}: {label}",
                        f"{rate} images/s, {ratio}× forward-only, min cosine {cosine}",
                    )
                )
    return rows


def workflow_targets(config: dict) -> list[str]:
    """What each check run asks for: the tables and the metrics, not the figures and the page
    (no GPU path; they need the CJK font a GPU machine may lack)."""
    targets = ["results/result1.csv", "results/result2.csv", "results/eval/metrics.json"]
    if config.get("fusion", {}).get("enabled"):
        targets += ["results/eval/fusion.csv", "results/summary/ocr.csv"]
    return targets


def workflow(run: Path, config: dict, cores: int, dry_run: bool = False) -> float:
    """Run the workflow in `run` with `config` (or only plan it); give its wall time."""
    run.mkdir(parents=True, exist_ok=True)
    config_file = run / "check-config.yaml"
    config_file.write_text(yaml.safe_dump(config, allow_unicode=True))
    started = time.time()
    # The greedy scheduler: the ILP one needs PuLP's solver, which a GPU machine may lack.
    extra = ["--scheduler", "greedy", *(["-n"] if dry_run else []), *workflow_targets(config)]
    command = snakemake_command(run, config_file, cores, *extra)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the workflow failed in {run}:\n{result.stderr[-4000:]}")
    return time.time() - started


def workflow_configs(sample: Path, workdir: Path) -> dict[str, dict]:
    """Give the three runs' configs (a random ViT-B-16 saved as their local checkpoint)."""
    from tuwen.models import architecture, build_model, save_checkpoint

    arch = architecture("ViT-B-16")
    checkpoint = workdir / "vit-b-16-random.pt"
    if not checkpoint.exists():
        save_checkpoint(build_model(arch, seed=0), checkpoint, arch)
    model = {"name": "ViT-B-16", "checkpoint": str(checkpoint)}
    base = {"data_root": str(sample), "models": [model], "train": {"enabled": False}, "gpus_per_job": 0}
    return {
        "cuda": {**base, "encode": {"device": "cuda", "gpu_jpeg_decode": True}},
        "cpu": {**base, "encode": {"device": "cpu"}},
        "cuda-finetune-fusion": {
            **base,
            "train": {"enabled": True, "epochs": 1, "precision": "amp", "device": "cuda"},
            "encode": {"device": "cuda"},
            "fusion": {"enabled": True, "ocr": True, "ocr_device": "auto"},
        },
    }


def top1_agreement(a: Path, b: Path) -> float:
    """Give the share of queries whose rank-1 hit is the same in both runs' tables (both directions)."""
    same = total = 0
    for table in ("result1.csv", "result2.csv"):
        first, second = (pd.read_csv(run / "results" / table) for run in (a, b))
        query = first.columns[0]
        top_a = first[first["similarity_ranking"] == 1].set_index(query).iloc[:, -1]
        top_b = second[second["similarity_ranking"] == 1].set_index(query).iloc[:, -1]
        shared = top_a.index.intersection(top_b.index)
        same += int((top_a[shared] == top_b[shared]).sum())
        total += len(shared)
    return same / total if total else float("nan")


def log_value(run: Path, pattern: str) -> str:
    for log in sorted((run / "results" / "logs").rglob("*.log")):
        found = re.search(pattern, log.read_text(encoding="utf-8", errors="replace"))
        if found:
            return found.group(1)
    return "not logged"


def workflow_rows(sample: Path, workdir: Path, cores: int) -> Iterator[tuple[str, str]]:
    configs = workflow_configs(sample, workdir)
    gpu_run, cpu_run, tuned_run = (workdir / name for name in configs)
    seconds = workflow(gpu_run, configs["cuda"], cores)
    yield ("workflow on the sample, ViT-B-16 encoded on CUDA (fp16, nvjpeg)", f"{seconds:.0f} s")
    seconds = workflow(cpu_run, configs["cpu"], cores)
    yield ("the same checkpoint encoded on this machine's CPU (fp32)", f"{seconds:.0f} s")
    agreement = top1_agreement(gpu_run, cpu_run)
    verdict = "ok" if agreement >= 0.98 else "BELOW 0.98"
    yield ("top-1 agreement of the tables, CUDA vs CPU", f"{agreement:.4f} ({verdict})")
    seconds = workflow(tuned_run, configs["cuda-finetune-fusion"], cores)
    log = pd.read_csv(next((tuned_run / "results" / "models").glob("*/finetune/train_log.csv")))
    yield ("one epoch of fine-tuning with AMP, then fusion with OCR", f"{seconds:.0f} s")
    yield ("fine-tuning samples/s (median step)", f"{log['samples_per_s'].median():.1f}")
    yield ("fine-tuning peak GPU memory", log_value(tuned_run, r"peak GPU memory: ([0-9.]+ GiB)"))
    yield ("OCR ran on", log_value(tuned_run, r"OCR on (\w+),"))
    metrics = json.loads((tuned_run / "results" / "eval" / "metrics.json").read_text())
    recall = ", ".join(f"{task} R@5 {metrics[task]['R@5']:.3f}" for task in ("t2i", "i2t") if task in metrics)
    yield ("fused run's recall (random ViT-B-16, one epoch)", recall)


def onnx_rows() -> list[tuple[str, str]]:
    """Which onnxruntime this machine has and what it can run on (OCR's engine)."""
    try:
        import onnxruntime
    except ImportError as error:
        return [("onnxruntime", f"not importable: {error}")]
    providers = ", ".join(onnxruntime.get_available_providers())
    return [("onnxruntime (OCR's engine) and its providers", f"{onnxruntime.__version__}: {providers}")]


def checked(section: Callable[[], Iterable[tuple[str, str]]], name: str) -> Iterator[tuple[str, str]]:
    """Give a section's rows as they come; a section that fails gives a FAILED row and the
    check goes on with the next, so one broken path does not hide the others' results."""
    try:
        yield from section()
    except (Exception, SystemExit) as error:  # noqa: BLE001 - reported in the table
        message = " ".join(str(error).split())
        yield (name, f"FAILED: {message[-600:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "check-gpu")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    problems = missing_inputs(args.sample)
    if problems:
        for problem in problems:
            print(f"check-gpu: {problem}", file=sys.stderr)
        return 1
    import torch

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    if not torch.cuda.is_available():
        # The runs' configs are planned (validated, every job laid out) so that a GPU session
        # does not find a broken config after it started its machine.
        configs = workflow_configs(args.sample, args.workdir)
        for name, config in configs.items():
            workflow(args.workdir / name, config, args.cores, dry_run=True)
        print(
            f"check-gpu: no CUDA device here (torch {torch.__version__}); the inputs are in place "
            f"({args.sample}) and the workflow plans all {len(configs)} runs' configs; "
            "nothing was measured. Run `make check-gpu` on a machine with a GPU."
        )
        return 0
    started = time.time()
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, Python {sys.version.split()[0]}, "
        f"pandas {pd.__version__}, {args.cores} cores\n",
        flush=True,
    )
    print("| check | result |")
    print("| --- | --- |", flush=True)
    sections = [
        ("device-path tests on CUDA", gpu_test_rows),
        ("onnxruntime", onnx_rows),
        ("bench.encode", lambda: encode_rows(args.sample)),
        ("workflow on the sample", lambda: workflow_rows(args.sample, args.workdir, args.cores)),
    ]
    for name, section in sections:
        for label, value in checked(section, name):
            print(f"| {label} | {value} |", flush=True)
    print(f"\n{time.time() - started:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
