"""Query encoding per inference backend: one text query and one image query, torch eager
against ONNX Runtime (fp32, and int8 by dynamic quantisation), in one run.

Random-initialised weights at full size: speed does not depend on weight values, and the
agreement columns (cosine to torch eager fp32 on the same inputs; min over the queries)
are measured on weights that were not pretrained. The baseline (torch eager) runs in the
same invocation; ratios are against it.

Usage: python -m bench.query_backends [--arch ViT-B-16 --arch RN50 ...] [--threads 2]
    [--repeats 20] [--out bench/query_backends.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tuwen.clip.architectures import architecture
from tuwen.clip.encode import tokenize_captions
from tuwen.clip.models import build_model
from tuwen.clip.onnx_towers import OnnxTower, cosines, export_tower, quantize_tower

QUERIES = [
    "一只小猫在草地上玩耍",
    "两个人在海边散步，夕阳西下",
    "红色的汽车停在路边",
    "桌上有一碗热气腾腾的牛肉面",
    "穿着白色连衣裙的女孩在花园里",
    "城市夜景，高楼灯火通明",
    "一只金毛犬叼着飞盘",
    "雪山下的湖泊倒映着蓝天",
]


def p50_ms(run, inputs: list, repeats: int) -> float:
    """Give the median wall time of one query, over `repeats` passes of every input (warmed)."""
    run(inputs[0])
    times = []
    for _ in range(repeats):
        for one in inputs:
            start = time.perf_counter()
            run(one)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(name: str, threads: int, repeats: int, scratch: Path) -> list[dict]:
    arch = architecture(name)
    model = build_model(arch, 0).eval()
    tokens = [t[None] for t in tokenize_captions(QUERIES)]
    generator = torch.Generator().manual_seed(0)
    pixels = [torch.randn((1, 3, arch.resolution, arch.resolution), generator=generator) for _ in range(4)]
    towers = {"text": (tokens, model.encode_text), "image": (pixels, model.encode_image)}
    rows = []
    with torch.inference_mode():
        reference = {t: np.concatenate([f(x).numpy() for x in xs]) for t, (xs, f) in towers.items()}
        eager = {t: p50_ms(lambda x, f=f: f(x), xs, repeats) for t, (xs, f) in towers.items()}
    rows.append({"model": name, "backend": "torch eager fp32", **_row(eager, eager, None)})
    exported = {t: export_tower(model, arch, t, scratch / f"{name}.{t}.onnx") for t in towers}
    quantized = {t: quantize_tower(p, scratch / f"{name}.{t}.int8.onnx") for t, p in exported.items()}
    for label, paths in (("onnxruntime fp32", exported), ("onnxruntime int8", quantized)):
        runs = {t: OnnxTower(p, threads) for t, p in paths.items()}
        times = {t: p50_ms(runs[t], xs, repeats) for t, (xs, _) in towers.items()}
        agreement = {
            t: float(cosines(reference[t], np.concatenate([runs[t](x) for x in xs])).min())
            for t, (xs, _) in towers.items()
        }
        rows.append({"model": name, "backend": label, **_row(times, eager, agreement)})
    return rows


def _row(times: dict, eager: dict, agreement: dict | None) -> dict:
    return {
        "text query ms": times["text"],
        "× text": eager["text"] / times["text"],
        "text cosine": agreement["text"] if agreement else 1.0,
        "image query ms": times["image"],
        "× image": eager["image"] / times["image"],
        "image cosine": agreement["image"] if agreement else 1.0,
    }


def table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            if isinstance(value, float):
                digits = 5 if "cosine" in column else 1 if "ms" in column else 2
                value = f"{value:.{digits}f}"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", action="append", help="architectures (default: ViT-B-16, RN50, the tiny ones)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the table (with its date and machine) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.arch or ["ViT-B-16", "RN50", "tuwen-tiny", "tuwen-tiny-rn"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            rows += measure(name, args.threads, args.repeats, Path(scratch))
    when = datetime.date.today().isoformat()
    heading = (
        f"{when}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"{args.threads} threads, torch {torch.__version__}; one query at a time, p50 over "
        f"{args.repeats} passes; cosine = min over the queries to torch eager fp32 on the same "
        "inputs, random-initialised (not pretrained) weights."
    )
    text = heading + "\n\n" + table(rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
