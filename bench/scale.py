"""Scale benchmark: the workflow against a bare one-process script, side by side, in one run.

Makes a contest-shaped folder (bench/contest_folder.py; kept under the work folder and
reused by later runs of the same size), then measures, one after another on the same
machine:

- bare baseline: bench/bare_baseline.py, one process, same model and preprocessing;
- full build: the workflow from nothing (tuwen-tiny-rn, training off);
- the bare baseline again (these machines drift; full / bare is against the mean);
- no-op rerun;
- +1% images added to the text -> image gallery, rerun;
- +1% captions added to the image -> text gallery, rerun;

and prints one table: wall time, jobs run, the jobs' fixed start-up share (from their
logs), the largest job's peak RSS, and the ratios full / bare and increment / full.
The full build's result tables must equal the baseline's byte for byte.

Usage: python -m bench.scale [--gallery 50000] [--queries 5000] [--cores 2]
    [--workdir runs/bench-scale] [--sample $TUWEN_SAMPLE] [--report FILE]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench import DEFAULT_SAMPLE
from bench.contest_folder import (
    add_gallery_captions,
    add_gallery_images,
    make_contest_folder,
    sources_from,
)

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_CONFIG = {"models": ["tuwen-tiny-rn"], "seed": 0, "train": {"enabled": False}, "ground_truth": ""}
LOG_NUMBER = r"([0-9.]+)"


@dataclass
class Step:
    """One measured run."""

    name: str
    wall_s: float
    jobs: int
    startup_s: float = 0.0
    job_wall_s: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def startup_share(self) -> float | None:
        return self.startup_s / self.job_wall_s if self.job_wall_s else None


def _job_logs_since(results: Path, since: float) -> list[str]:
    logs = [p for p in (results / "logs").rglob("*.log") if p.stat().st_mtime >= since]
    return [p.read_text(encoding="utf-8", errors="replace") for p in logs]


def _sum_of(pattern: str, logs: list[str]) -> float:
    return sum(float(m) for text in logs for m in re.findall(pattern, text))


def _peak_of(logs: list[str]) -> float:
    peaks = [
        max(float(a), float(b))
        for text in logs
        for a, b in re.findall(
            rf"job peak RSS: {LOG_NUMBER} MB \(largest child process {LOG_NUMBER} MB\)", text
        )
    ]
    return max(peaks, default=0.0)


def snakemake_command(workdir: Path, config_file: Path, cores: int, *extra: str) -> list[str]:
    """Give the command that runs this repository's workflow in `workdir` with a config file."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        "--configfile",
        str(config_file),
        *extra,
    ]


def run_workflow(name: str, workdir: Path, config_file: Path, cores: int) -> Step:
    """Run the workflow once in `workdir`; give its wall time, jobs and the jobs' start-up and memory."""
    command = snakemake_command(workdir, config_file, cores)
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"{name}: snakemake failed\n{result.stderr[-5000:]}")
    done = re.findall(r"(\d+) of (\d+) steps", result.stderr)
    logs = _job_logs_since(workdir / "results", started)
    return Step(
        name,
        wall,
        int(done[-1][1]) if done else 0,
        _sum_of(rf"job start-up: {LOG_NUMBER} s", logs),
        _sum_of(rf"job wall: {LOG_NUMBER} s", logs),
        _peak_of(logs),
    )


def run_bare(data: Path, out: Path, cores: int) -> Step:
    """Run the bare baseline in its own process; give its wall time and peak memory."""
    command = [sys.executable, "-m", "bench.bare_baseline", str(data), str(out), "--threads", str(cores)]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"bare baseline failed\n{result.stderr[-5000:]}")
    return Step("bare baseline (one process)", wall, 1, peak_rss_mb=_peak_of([result.stdout]))


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def snakemake_start_up() -> tuple[float, str]:
    """Give the wall time of `snakemake --version` (it loads every executor plugin) and what
    SLURM's `scontrol` does here: the SLURM plugin runs `scontrol show config` when it loads,
    and where the client tools are installed but no controller answers, that waits ~9 s in
    every Snakemake start, which a benchmark must not measure by accident."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True, check=True)
    start_up = time.perf_counter() - started
    if not shutil.which("scontrol"):
        return start_up, "no SLURM client tools here"
    started = time.perf_counter()
    try:
        answered = (
            subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=30).returncode == 0
        )
    except subprocess.TimeoutExpired:
        answered = False
    waited = time.perf_counter() - started
    state = "a controller answers" if answered else "NO controller answers"
    return start_up, f"scontrol installed, {state} (`scontrol show config`: {waited:.1f} s)"


def table(
    steps: dict[str, Step], equal: bool, gallery: int, queries: int, cores: int, start_up: tuple[float, str]
) -> str:
    """Give the benchmark's result as a Markdown table with the ratios the targets are set on."""
    full = steps["full"]
    # The machine drifts: the baseline runs before and after the full build; the ratio is
    # against their mean.
    bare = (steps["bare"].wall_s + steps["bare_again"].wall_s) / 2
    ratio = {
        "bare": "",
        "bare_again": f"mean of both: {bare:.1f} s",
        "full": f"full / bare = **{full.wall_s / bare:.2f}**",
        "noop": "",
        "images": f"increment / full = **{steps['images'].wall_s / full.wall_s:.1%}**",
        "captions": f"increment / full = **{steps['captions'].wall_s / full.wall_s:.1%}**",
    }
    lines = [
        f"Gallery {gallery:,} / queries {queries:,} per direction, tuwen-tiny-rn, training off, "
        f"{cores} cores, `shards` as in config.yaml.",
        "",
        "| run | wall s | jobs | job start-up share | largest job peak RSS MB | ratio |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, step in steps.items():
        lines.append(
            f"| {step.name} | {step.wall_s:.1f} | {step.jobs} | {_fmt(step.startup_share, '.1%')} "
            f"| {step.peak_rss_mb:.0f} | {ratio[key]} |"
        )
    lines += [
        "",
        f"Result tables of the full build equal the baseline's byte for byte: **{'yes' if equal else 'NO'}**",
        "",
        f"Snakemake's own start-up here (`snakemake --version`, plugins loaded): {start_up[0]:.1f} s; "
        f"SLURM: {start_up[1]}.",
    ]
    return "\n".join(lines)


def prepare_data(workdir: Path, gallery: int, queries: int, sample: Path | None, cores: int) -> Path:
    """Give a pristine contest folder of this size, made once and kept for later runs."""
    pristine = workdir / f"data-{gallery}x{queries}"
    stamp = pristine / ".complete"
    if not stamp.exists():
        shutil.rmtree(pristine, ignore_errors=True)
        started = time.time()
        make_contest_folder(pristine, gallery, queries, sources_from(sample), cores)
        stamp.write_text("made\n")
        print(f"made {pristine} in {time.time() - started:.0f} s", file=sys.stderr)
    return pristine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-scale")
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--report", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    sample = args.sample if (args.sample / "附件1" / "ImageWordData.csv").exists() else None
    pristine = prepare_data(args.workdir, args.gallery, args.queries, sample, args.cores)
    data = args.workdir / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(pristine, data, copy_function=os.link)  # cheap; additions go to the copy only
    runs = args.workdir / "workflow"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    config_file = args.workdir / "bench-config.yaml"
    config_file.write_text(yaml.safe_dump({**WORKFLOW_CONFIG, "data_root": str(data.resolve())}))

    start_up = snakemake_start_up()
    print(f"snakemake start-up {start_up[0]:.1f} s; {start_up[1]}", file=sys.stderr)
    steps = {"bare": run_bare(data, args.workdir / "bare", args.cores)}
    steps["full"] = run_workflow("workflow: full build", runs, config_file, args.cores)
    steps["bare_again"] = run_bare(data, args.workdir / "bare", args.cores)
    steps["bare_again"].name = "bare baseline again, after the full build"
    equal = all(
        (runs / "results" / name).read_bytes() == (args.workdir / "bare" / name).read_bytes()
        for name in ("result1.csv", "result2.csv")
    )
    steps["noop"] = run_workflow("workflow: no-op rerun", runs, config_file, args.cores)
    added = max(1, args.gallery // 100)
    add_gallery_images(data, added, sources_from(sample), args.cores)
    steps["images"] = run_workflow(f"workflow: +{added:,} images (1%)", runs, config_file, args.cores)
    add_gallery_captions(data, added, sources_from(sample))
    steps["captions"] = run_workflow(f"workflow: +{added:,} captions (1%)", runs, config_file, args.cores)

    report = table(steps, equal, args.gallery, args.queries, args.cores, start_up)
    print(report)
    if args.report:
        args.report.write_text(report + "\n", encoding="utf-8")
    if not equal:
        raise SystemExit("the workflow's result tables differ from the bare baseline's")


if __name__ == "__main__":
    main()
