"""The result tables and recall of this checkout against those of an earlier commit, byte for
byte: the check that a change meant to change no result changed none.

    python -m bench.same_results --against 27de08a [--workdir runs/same-results]

Each commit runs the default workflow on the embedded demo and, where `TUWEN_SAMPLE` names
the real contest sample, on that too, from nothing, in a folder of its own; the earlier
commit runs from its own worktree with its own code (`git worktree add`). Prints one row per
run and file: the two files' sha256 and whether they are the same.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPARED = ("results/result1.csv", "results/result2.csv", "results/eval/metrics.json")


def worktree(commit: str, folder: Path) -> Path:
    """Give a checkout of `commit` at `folder` with its own .venv (the cached packages)."""
    if not (folder / "Snakefile").exists():
        subprocess.run(["git", "worktree", "add", "--force", str(folder), commit], cwd=REPO, check=True)
    subprocess.run(["make", "env"], cwd=folder, check=True, capture_output=True)
    return folder


def run(checkout: Path, folder: Path, config: list[str]) -> float:
    """Run the default workflow of `checkout` in `folder` (emptied first); give its wall time."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    command = [str(checkout / ".venv/bin/snakemake"), "--cores", "2", "--directory", str(folder), "--quiet"]
    subprocess.run([*command, *(["--config", *config] if config else [])], cwd=checkout, check=True)
    return time.perf_counter() - started


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the earlier commit")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "same-results")
    args = parser.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    old = worktree(args.against, args.workdir / f"checkout-{args.against}")
    runs = {"demo": []}
    sample = os.environ.get("TUWEN_SAMPLE")
    if sample and Path(sample).is_dir():
        runs["sample"] = [f"data_root={sample}"]
    rows, same = [], True
    for name, config in runs.items():
        seconds = {}
        for label, checkout in (("earlier", old), ("this", REPO)):
            seconds[label] = run(checkout, args.workdir / f"{name}-{label}", config)
        for path in COMPARED:
            before = digest(args.workdir / f"{name}-earlier" / path)
            after = digest(args.workdir / f"{name}-this" / path)
            same &= before == after != "missing"
            rows.append(
                f"| {name} | `{path}` | {before} | {after} | {'yes' if before == after else '**no**'} |"
            )
        rows.append(f"| {name} | wall time | {seconds['earlier']:.0f} s | {seconds['this']:.0f} s | |")
    print(f"\n{args.against} (earlier) against {head.stdout.strip()} (this checkout), default config:\n")
    print("| run | file | sha256, earlier | sha256, this | same |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"\nall the same: {'yes' if same else 'no'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
