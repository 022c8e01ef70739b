"""OCR benchmark: PP-OCR images/s on real contest photos, against encoding the same images.

OCR is the costly part of fusion's text channel; this measures what it costs per image
and what a contest gallery of 50,000 images would take, beside the CLIP image encoding of
the same files in the same run (tuwen-tiny-rn, and ViT-B-16 at full size, random weights:
throughput does not depend on weight values), so the two compare on the same machine state.

Usage: python -m bench.ocr [--images N] [--threads T] [--sample DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.encode import DEFAULT_SAMPLE, image_files
from tuwen.encode import encode_images
from tuwen.models import architecture, build_model
from tuwen.ocr import ocr_engine, read_image_text

CONTEST_GALLERY = 50_000


def ocr_rate(paths: list[str], threads: int) -> tuple[float, int]:
    """Give images/s of OCR over `paths` (after one warm-up image) and how many had text."""
    engine = ocr_engine(threads, "cpu")
    read_image_text(engine, paths[0], 10**9)
    started = time.perf_counter()
    with_text = sum(read_image_text(engine, path, 10**9).status == "ok" for path in paths)
    return len(paths) / (time.perf_counter() - started), with_text


def encode_rate(paths: list[str], arch_name: str, threads: int) -> float:
    """Give images/s of end-to-end CLIP encoding (read, decode, preprocess, encode) of `paths`."""
    import torch

    torch.set_num_threads(threads)
    arch = architecture(arch_name)
    model = build_model(arch, 0).eval()
    items = pd.DataFrame({"id": [str(i) for i in range(len(paths))], "digest": None, "source": paths})
    encode_images(model, items.head(8), arch.resolution, "cpu", num_workers=threads, progress=False)
    started = time.perf_counter()
    encode_images(model, items, arch.resolution, "cpu", num_workers=threads, progress=False)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        paths = image_files(args.images, args.sample, Path(scratch))
        rates = {"OCR (PP-OCRv4 det + cls + rec, onnxruntime CPU)": ocr_rate(paths, args.threads)}
        encoded = {name: encode_rate(paths, name, args.threads) for name in ("tuwen-tiny-rn", "ViT-B-16")}
    ((ocr_name, (ocr, with_text)),) = rates.items()
    print(
        f"{len(paths)} images from {args.sample.name if args.sample.is_dir() else 'generated scenes'}, "
        f"{args.threads} threads; OCR found text in {with_text} of {len(paths)}\n"
    )
    print("| stage | images/s | 50,000 images | speed / OCR's |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| {ocr_name} | {ocr:.2f} | {CONTEST_GALLERY / ocr / 3600:.1f} h | 1.00 |")
    for name, rate in encoded.items():
        print(
            f"| CLIP encode {name} (end to end) | {rate:.2f} | {CONTEST_GALLERY / rate / 3600:.1f} h | "
            f"{rate / ocr:.2f} |"
        )


if __name__ == "__main__":
    main()
