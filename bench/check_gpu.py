"""`make check-gpu`: every GPU path of the project, checked by one prepared command (≤ 8 minutes
on one H100/H200), printing one table.

0. The CUDA halves of the device tests: tests/test_encode.py (nvjpeg against PIL, only
   complete JPEGs on that path, the pixel limit from the header, the resize fallback) and
   tests/test_ocr.py (PP-OCR's models as torch modules against onnxruntime, an OCR job's
   engines forked on CUDA): the same assertions `make test` runs on the CPU.
1. `bench.encode` on CUDA, ViT-B-16 and ViT-H-14 (random weights): end to end against the
   forward pass alone, both decode paths (PIL in workers; nvjpeg + resize on the GPU), and
   the GPU path's smallest cosine to the PIL path's (numpy's min: a NaN shows).
2. OCR of the sample's 300 query and gallery photos as an OCR job runs it, on the CPU
   (onnxruntime) and on CUDA (the same models in torch): images/s of each and how often
   they read the same text.
3. The workflow on the real sample with a random ViT-B-16 saved as a local checkpoint:
   - retrieval encoded on CUDA (fp16, GPU JPEG decoding) and the same checkpoint's retrieval
     encoded on this machine's CPU (fp32): the top-1 agreement of their tables (≥ 0.98);
   - one epoch of fine-tuning with AMP on CUDA (samples/s, peak GPU memory), then fusion with
     OCR (`fusion.ocr_device: auto`: the log says where OCR ran, and its images/s), and the
     run's R@5.

On a machine without CUDA it checks that its inputs exist (the sample, the architectures,
the workflow), says that nothing was measured, and exits 0; a missing input exits 1.

Usage: python -m bench.check_gpu [--sample DIR] [--workdir DIR] [--cores N] [--only SECTIONS]
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

from bench import DEFAULT_SAMPLE
from bench.scale import snakemake_command

REPO = Path(__file__).resolve().parents[1]
ENCODE_IMAGES = {"ViT-B-16": 4096, "ViT-H-14": 1024}


def missing_inputs(sample: Path) -> list[str]:
    """Give what this check needs and cannot find (empty: ready)."""
    from tuwen.clip.architectures import ModelError, architecture

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
    """Run the CUDA halves of the device tests (their CPU halves are in `make test`)."""
    rows = []
    for test_file, what in (
        ("tests/test_encode.py", "nvjpeg vs PIL, complete JPEGs only, pixel limit, resize fallback"),
        ("tests/test_ocr.py", "PP-OCR's models in torch vs onnxruntime, a job's forked engines"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "pytest", test_file, "-k", "cuda", "-q", "-p", "no:cacheprovider"],
            cwd=REPO,
            env={**os.environ, "TUWEN_TESTS_ON_CUDA": "1"},  # tests/conftest.py hides the GPU otherwise
            capture_output=True,
            text=True,
            check=False,
        )
        lines = result.stdout.strip().splitlines()
        summary = lines[-1] if lines else result.stderr[-300:]
        passed = result.returncode == 0 and "passed" in summary and "skipped" not in summary
        failure = "" if passed else " " + " ".join(line for line in lines if line.startswith("E "))[:600]
        rows.append(
            (
                f"CUDA device tests, {test_file} -k cuda ({what})",
                f"{summary} ({'ok' if passed else 'FAILED'}){failure}",
            )
        )
    return rows


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
            if len(cells) == 5 and cells[2].replace(".", "", 1).isdigit():
                label, fed, rate, ratio, cosine = cells
                rows.append(
                    (
                        f"encode {arch}: {label}",
                        f"{rate} images/s, {ratio}× forward-only, decode only {fed} images/s, "
                        f"min cosine {cosine}",
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
    from tuwen.clip.architectures import architecture
    from tuwen.clip.models import build_model, save_checkpoint

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


def ocr_rate(run: Path) -> str:
    """Give the images/s of a run's OCR jobs: images read over the jobs' summed wall time."""
    images = seconds = 0.0
    for log in (run / "results" / "logs" / "ocr").rglob("*.log"):
        text = log.read_text(encoding="utf-8", errors="replace")
        count = re.search(r"OCR of (\d+) images", text)
        wall = re.search(r"job wall: ([0-9.]+) s", text)
        if count and wall:
            images += int(count.group(1))
            seconds += float(wall.group(1))
    if not seconds:
        return "not logged"
    return f"{images / seconds:.1f} ({images:.0f} images, {seconds:.0f} s of jobs)"


def agreement_rows(sample: Path, workdir: Path, cores: int) -> Iterator[tuple[str, str]]:
    configs = workflow_configs(sample, workdir)
    gpu_run, cpu_run = workdir / "cuda", workdir / "cpu"
    seconds = workflow(gpu_run, configs["cuda"], cores)
    yield ("workflow on the sample, ViT-B-16 encoded on CUDA (fp16, nvjpeg)", f"{seconds:.0f} s")
    seconds = workflow(cpu_run, configs["cpu"], cores)
    yield ("the same checkpoint encoded on this machine's CPU (fp32)", f"{seconds:.0f} s")
    agreement = top1_agreement(gpu_run, cpu_run)
    verdict = "ok" if agreement >= 0.98 else "BELOW 0.98"
    yield ("top-1 agreement of the tables, CUDA vs CPU", f"{agreement:.4f} ({verdict})")


def finetune_fusion_rows(sample: Path, workdir: Path, cores: int) -> Iterator[tuple[str, str]]:
    configs = workflow_configs(sample, workdir)
    tuned_run = workdir / "cuda-finetune-fusion"
    seconds = workflow(tuned_run, configs["cuda-finetune-fusion"], cores)
    log = pd.read_csv(next((tuned_run / "results" / "models").glob("*/finetune/train_log.csv")))
    yield ("one epoch of fine-tuning with AMP, then fusion with OCR", f"{seconds:.0f} s")
    yield ("fine-tuning samples/s (median step)", f"{log['samples_per_s'].median():.1f}")
    yield ("fine-tuning peak GPU memory", log_value(tuned_run, r"peak GPU memory: ([0-9.]+ GiB)"))
    yield ("OCR ran on", log_value(tuned_run, r"OCR on (\w+),"))
    yield ("OCR images/s (the fused run's OCR jobs, from their logs)", ocr_rate(tuned_run))
    metrics = json.loads((tuned_run / "results" / "eval" / "metrics.json").read_text())
    recall = ", ".join(f"{task} R@5 {metrics[task]['R@5']:.3f}" for task in ("t2i", "i2t") if task in metrics)
    yield ("fused run's recall (random ViT-B-16, one epoch)", recall)


OCR_JOB = """
import sys, time
from tuwen.text.ocr import OcrOptions, ocr_device, ocr_shard
device = ocr_device(sys.argv[3])
started = time.perf_counter()
ocr_shard(sys.argv[1], sys.argv[2], 10**9, OcrOptions.defaults(), 1, int(sys.argv[4]), device)
print(device, time.perf_counter() - started)
"""


def ocr_rows(sample: Path, workdir: Path, cores: int) -> list[tuple[str, str]]:
    """OCR of the sample's query and gallery photos as a job does it (a fresh process that
    chooses the device, then forks its engines), on the CPU and on CUDA, in this one run."""
    folders = [sample / "附件2" / "ImageData", sample / "附件3" / "ImageData"]
    paths = sorted(str(path) for folder in folders for path in folder.iterdir())
    items = pd.DataFrame({"id": [f"{i:04d}" for i in range(len(paths))], "digest": "-", "source": paths})
    workdir.mkdir(parents=True, exist_ok=True)
    items.to_parquet(workdir / "ocr-list.parquet")
    rates, texts, rows = {}, {}, []
    for device, processes in (("cpu", cores), ("cuda", max(1, cores // 2))):
        output = workdir / f"ocr-{device}.parquet"
        result = subprocess.run(
            [sys.executable, "-c", OCR_JOB, str(workdir / "ocr-list.parquet"), str(output), device]
            + [str(processes)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"OCR on {device}: {result.stderr[-600:]}")
        ran_on, seconds = result.stdout.split()[-2:]
        rates[device] = len(paths) / float(seconds)
        texts[device] = pd.read_parquet(output)["text"].tolist()
        rows.append(
            (
                f"OCR of {len(paths)} sample photos on {ran_on}, {processes} processes",
                f"{rates[device]:.1f} images/s",
            )
        )
    same = sum(a == b for a, b in zip(texts["cpu"], texts["cuda"], strict=True)) / len(paths)
    rows.append(
        (
            "OCR on CUDA against the CPU",
            f"{rates['cuda'] / rates['cpu']:.2f}× the images/s; the same text for {same:.1%} of the photos",
        )
    )
    return rows


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
    parser.add_argument(
        "--only",
        type=lambda names: names.split(","),
        help="comma-separated sections: tests, encode, ocr, agreement, finetune-fusion (default: all)",
    )
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
    sections = {
        "tests": gpu_test_rows,
        "encode": lambda: encode_rows(args.sample),
        "ocr": lambda: ocr_rows(args.sample, args.workdir / "ocr", args.cores),
        "agreement": lambda: agreement_rows(args.sample, args.workdir, args.cores),
        "finetune-fusion": lambda: finetune_fusion_rows(args.sample, args.workdir, args.cores),
    }
    for name, section in sections.items():
        if args.only and name not in args.only:
            continue
        for label, value in checked(section, name):
            print(f"| {label} | {value} |", flush=True)
    print(f"\n{time.time() - started:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
