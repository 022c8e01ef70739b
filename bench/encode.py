"""Encoding benchmark: end-to-end images/s against the model's forward pass alone, in one run.

Random-initialised weights at full size (throughput does not depend on weight values).
Forward-only: the same preprocessed batch through `encode_image` again and again, the
hardware's limit for this model. End to end: what an encode job does for a shard, read +
decode + preprocess + encode + write the Parquet shard, through `tuwen.clip.encode`. On CUDA both
decode paths are measured (PIL in workers; nvjpeg + resize on the GPU). Each path also
runs with no model (*decode only*: how fast the device can be fed at most), and the
embeddings of the reduced-scale JPEG decode (`encode.jpeg_draft`) and of the GPU path are
compared with the PIL path's (cosine; the GPU path's goal is >= 0.999).

On the CPU, the model's towers are also exported as a run exports them
(`tuwen.clip.onnx_towers.export_model_towers`: fp32, and int8) and the same shard is encoded
end to end through ONNX Runtime; then one text query and one image query are timed (p50)
through the backend a run uses by default (`choose_backend`). The last line is that
backend's: `text_query P ms image_query Q ms encode R images/s`.

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

from bench import DEFAULT_SAMPLE
from tuwen.clip.architectures import architecture
from tuwen.clip.cards import ModelCard
from tuwen.clip.encode import encode_caption, encode_images, encode_picture, image_batches, inference_autocast
from tuwen.clip.models import build_model, save_checkpoint
from tuwen.clip.onnx_towers import AUTO, OnnxClip, choose_backend, export_model_towers
from tuwen.data.demo import ALL_SCENES, draw_scene
from tuwen.files.images import load_image
from tuwen.files.parquet import l2_normalised, write_features

REPO = Path(__file__).resolve().parents[1]


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


# The ways an encode job can read pixels: (label, jpeg_draft, jpeg_decode_device on CUDA).
DECODE_PATHS = (
    ("PIL decode in workers", False, None),
    ("PIL at reduced JPEG scale (encode.jpeg_draft)", True, None),
    ("nvjpeg + resize on the GPU", False, "cuda"),
)


def decode_only(items: pd.DataFrame, arch, device: str, batch: int, workers: int, draft: bool, gpu) -> float:
    """Give images/s of reading, decoding and preprocessing `items` into model input on the
    device, as an encode job does, with no model: what the GPU can be fed at most."""
    _sync(device)
    started = time.perf_counter()
    count = 0
    with torch.inference_mode():
        for prepared in image_batches(
            items, arch.resolution, device, batch, workers, None, jpeg_draft=draft, jpeg_decode_device=gpu
        ):
            count += len(prepared.positions)
    _sync(device)
    return count / (time.perf_counter() - started)


def end_to_end(
    model, items: pd.DataFrame, arch, device: str, batch: int, workers: int, draft: bool, gpu, out: Path
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
        None,
        jpeg_draft=draft,
        progress=False,
        jpeg_decode_device=gpu,
    )
    write_features(out, encoded.ids, encoded.embeddings, [""] * len(encoded.ids), {"logit_scale": 100.0})
    return len(encoded.ids) / (time.perf_counter() - started), encoded


def smallest_cosine(reference, other) -> float:
    """Give the smallest cosine between two encodings' embeddings of the same ids."""
    a = l2_normalised(reference.embeddings)
    order = {item_id: i for i, item_id in enumerate(reference.ids)}
    b = l2_normalised(other.embeddings)
    # numpy's min, not Python's: a NaN must show as NaN, not slip past the gate.
    return float(np.min([a[order[i]] @ row for i, row in zip(other.ids, b, strict=True)]))


QUERY = "两个人在海边散步，夕阳西下"


def query_p50_ms(model, picture, arch, repeats: int = 15) -> tuple[float, float]:
    """Give the p50 ms of one text query and one image query (a decoded picture) through `model`."""
    timings = []
    for encode in (
        lambda: encode_caption(model, QUERY),
        lambda: encode_picture(model, picture, arch.resolution),
    ):
        encode()  # warm-up, as the service warms at start
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            encode()
            times.append((time.perf_counter() - started) * 1000)
        timings.append(float(np.median(times)))
    return timings[0], timings[1]


def onnx_rows(model, arch, items, paths, batch, workers, reference, scratch: Path):
    """Export the towers as a run does (fp32, int8), encode the shard through each, and time
    one query of each kind; give the table's rows and the last line's numbers for the backend
    a run uses by default."""
    save_checkpoint(model, scratch / "weights.pt", arch)
    picture = load_image(paths[0], None)[0]
    rows, queries, described = [], {}, {}
    for int8 in (False, True):
        label = "int8" if int8 else "fp32"
        card = ModelCard(f"{arch.name}-{label}", arch.name, str(scratch / "weights.pt"), "-", int8)
        described[label] = export_model_towers(model, card, scratch / label)
        onnx = OnnxClip(scratch / label / "towers.json", threads=torch.get_num_threads())
        rate, encoded = end_to_end(
            onnx, items, arch, "cpu", batch, workers, False, None, scratch / "o.parquet"
        )
        precision = "/".join(f"{t} {p}" for t, p in described[label]["precision"].items())
        rows.append((f"ONNX Runtime {label} ({precision})", None, rate, smallest_cosine(reference, encoded)))
        queries[label] = (*query_p50_ms(onnx, picture, arch), rate)
    queries["torch"] = (*query_p50_ms(model, picture, arch), None)
    backend, why = choose_backend(AUTO, "cpu", described["fp32"])
    return rows, queries, ("fp32" if backend == "onnxruntime" else "torch"), why


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
        preprocessed = torch.stack([transform(load_image(p, None)[0]) for p in paths[:batch]]).to(args.device)
        limit = forward_only(model, preprocessed, args.device, repeats=max(2, (count // batch) // 4 or 2))

        rows = [("forward only (same batch again)", None, limit, None)]
        reference = None
        for label, draft, gpu in DECODE_PATHS:
            if gpu and not cuda:
                continue
            fed = decode_only(items, arch, args.device, batch, args.workers, draft, gpu)
            rate, encoded = end_to_end(
                model, items, arch, args.device, batch, args.workers, draft, gpu, scratch / "shard.parquet"
            )
            if reference is None:  # the first path, PIL's, is what the others are compared with
                reference, cosine = encoded, None
            else:
                cosine = smallest_cosine(reference, encoded)
            rows.append((label, fed, rate, cosine))
        torch_rate = rows[1][2]
        if not cuda:
            onnx, queries, default, why = onnx_rows(
                model, arch, items, paths, batch, args.workers, reference, scratch
            )
            rows += onnx

    name = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores"
    print(
        f"{args.arch} on {name}: {count} images, batch {batch}, {args.workers} decode workers, "
        f"torch {torch.__version__}"
    )
    print()
    print("| path | decode only, images/s | end to end, images/s | × forward-only | min cosine to PIL path |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, fed, rate, cosine in rows:
        print(
            f"| {label} | {'–' if fed is None else f'{fed:.1f}'} | {rate:.1f} | {rate / limit:.2f} "
            f"| {'–' if cosine is None else f'{cosine:.5f}'} |"
        )
    if cuda:
        return
    print()
    print("| backend | one text query, ms (p50) | one image query, ms (p50) | end to end, images/s |")
    print("| --- | ---: | ---: | ---: |")
    for label, (text_ms, image_ms, rate) in {"torch": queries["torch"], **queries}.items():
        shown = torch_rate if rate is None else rate
        name = "torch eager" if label == "torch" else f"ONNX Runtime {label}"
        print(f"| {name} | {text_ms:.1f} | {image_ms:.1f} | {shown:.1f} |")
    print()
    print(f"default backend: {'ONNX Runtime fp32' if default == 'fp32' else 'torch'} ({why})")
    text_ms, image_ms, rate = queries[default]
    rate = torch_rate if rate is None else rate
    print(f"text_query {text_ms:.1f} ms image_query {image_ms:.1f} ms encode {rate:.1f} images/s")


if __name__ == "__main__":
    main()
