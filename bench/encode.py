"""Encoding benchmark: end-to-end images/s against the model's forward pass alone, in one run.

Random-initialised weights at full size (throughput does not depend on weight values).
Forward-only: the same preprocessed batch through `encode_image` again and again, the
hardware's limit for this model. End to end: what an encode job does for a shard, read +
decode + preprocess + encode + write the Parquet shard, through `tuwen.encode`. On CUDA both
decode paths are measured (PIL in workers; nvjpeg + resize on the GPU), and the GPU path's
embeddings are compared with the PIL path's (cosine; the goal is >= 0.999).

Usage: python -m bench.encode --arch ViT-B-16|ViT-H-14|... --device cpu|cuda
    [--images N] [--batch-size B] [--workers W] [--sample DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from cn_clip.clip import image_transform

from tuwen.demo import ALL_SCENES, draw_scene
from tuwen.encode import encode_images, inference_autocast
from tuwen.images import load_image
from tuwen.models import architecture, build_model
from tuwen.parquet import l2_normalised, write_features

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = REPO.parent / "shared" / "data" / "teddy2024-sample"


def image_files(count: int, sample: Path, scratch: Path) -> list[str]:
    """Give `count` image paths: the sample's real photos (repeated as needed), or generated JPEGs."""
    folders = [sample / name / "ImageData" for name in ("附件1", "附件2", "附件3")]
    paths = sorted(str(p) for folder in folders if folder.is_dir() for p in folder.iterdir())
    if not paths:
        rng = random.Random(0)
        for i in range(min(count, 256)):
            path = scratch / f"scene-{i}.jpg"
            draw_scene(ALL_SCENES[i % len(ALL_SCENES)], rng).resize((500, 400)).save(path, quality=90)
            paths.append(str(path))
    return [paths[i % len(paths)] for i in range(count)]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def forward_only(model, batch: torch.Tensor, device: str, repeats: int) -> float:
    """Give images/s of `encode_image` on one preprocessed batch already on the device."""
    with torch.inference_mode(), inference_autocast(device):
        model.encode_image(batch)  # warm-up: kernels, allocator
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            model.encode_image(batch)
        _sync(device)
    return repeats * len(batch) / (time.perf_counter() - started)


def end_to_end(
    model, items: pd.DataFrame, arch, device: str, batch: int, workers: int, gpu_decode: bool, out: Path
):
    """Give (images/s, embeddings) of reading, decoding, encoding and writing `items` as one shard."""
    _sync(device)
    started = time.perf_counter()
    encoded = encode_images(
        model,
        items,
        arch.resolution,
        device,
        batch,
        workers,
        progress=False,
        jpeg_decode_device="cuda" if gpu_decode else None,
    )
    write_features(out, encoded.ids, encoded.embeddings, [""] * len(encoded.ids), {"logit_scale": 100.0})
    return len(encoded.ids) / (time.perf_counter() - started), encoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--images", type=int, help="default: 64 on CPU, 8192 on CUDA")
    parser.add_argument("--batch-size", type=int, help="default: 32 on CPU, 256 on CUDA")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    count = args.images or (8192 if cuda else 64)
    batch = args.batch_size or (256 if cuda else 32)
    torch.set_num_threads(os.cpu_count() or 1)
    if cuda:
        torch.backends.cudnn.benchmark = True

    arch = architecture(args.arch)
    model = build_model(arch, seed=0).eval().to(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        paths = image_files(count, args.sample, scratch)
        items = pd.DataFrame({"id": [f"{i:06d}" for i in range(count)], "digest": None, "source": paths})
        transform = image_transform(arch.resolution)
        preprocessed = torch.stack([transform(load_image(p)[0]) for p in paths[:batch]]).to(args.device)
        limit = forward_only(model, preprocessed, args.device, repeats=max(2, (count // batch) // 4 or 2))

        rows = [("forward only (same batch again)", limit, None)]
        pil_rate, pil = end_to_end(
            model, items, arch, args.device, batch, args.workers, False, scratch / "pil.parquet"
        )
        rows.append(("end to end, PIL decode in workers", pil_rate, None))
        if cuda:
            gpu_rate, gpu = end_to_end(
                model, items, arch, args.device, batch, args.workers, True, scratch / "gpu.parquet"
            )
            a = l2_normalised(pil.embeddings)
            order = {item_id: i for i, item_id in enumerate(pil.ids)}
            b = l2_normalised(gpu.embeddings)
            # numpy's min, not Python's: a NaN must show as NaN, not slip past the gate.
            cosine = float(np.min([a[order[i]] @ row for i, row in zip(gpu.ids, b, strict=True)]))
            rows.append(("end to end, nvjpeg + resize on the GPU", gpu_rate, cosine))

    name = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores"
    print(
        f"{args.arch} on {name}: {count} images, batch {batch}, {args.workers} decode workers, "
        f"torch {torch.__version__}"
    )
    print()
    print("| path | images/s | × forward-only | min cosine to PIL path |")
    print("| --- | ---: | ---: | ---: |")
    for label, rate, cosine in rows:
        print(f"| {label} | {rate:.1f} | {rate / limit:.2f} | {'–' if cosine is None else f'{cosine:.5f}'} |")


if __name__ == "__main__":
    main()
