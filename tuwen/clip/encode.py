"""Encode shards: images or captions through a CN-CLIP model into feature shards."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd
import torch
from cn_clip.clip import image_transform, tokenize
from cn_clip.clip.model import CLIP
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import Compose
from torchvision.transforms.functional import pil_to_tensor
from tqdm import tqdm

from tuwen.clip.architectures import CONTEXT_LENGTH
from tuwen.clip.cards import ModelCard
from tuwen.clip.device_decoding import decode_jpegs, is_complete_plain_jpeg, normalise
from tuwen.clip.models import load_model
from tuwen.clip.onnx_towers import ONNXRUNTIME, OnnxClip, choose_backend, read_towers
from tuwen.errors import TuwenError
from tuwen.files.images import (
    ImageRejected,
    content_digest,
    decode_image,
    open_image,
    read_image_bytes,
)
from tuwen.files.parquet import l2_normalised, read_table, write_features
from tuwen.run.declaration import IMAGES, TEXTS

# What encodes: cn_clip's model in torch, or its exported towers in ONNX Runtime (the same calls).
Encoder: TypeAlias = CLIP | OnnxClip


def embedding_dim(model: Encoder) -> int:
    """Give the width of a model's embeddings."""
    return model.dim if isinstance(model, OnnxClip) else int(model.text_projection.shape[1])


def logit_scale(model: Encoder) -> float:
    """Give a model's learned logit scale (exp of its parameter), as cn_clip scores with it."""
    return model.logit_scale_value if isinstance(model, OnnxClip) else float(model.logit_scale.exp().item())


@dataclass
class EncodedItems:
    """Embeddings of the items that could be encoded, and why the others could not."""

    ids: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # id, reason code, sentence


def pick_device(requested: str) -> str:
    """Give `cuda` or `cpu` for a config value of auto, cuda or cpu."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for device cuda, but torch sees no CUDA device")
    return requested


class _ImageItems(Dataset):
    """Per item: (index, "pixels", resized uint8 pixels) from PIL, (index, "jpeg", bytes) for the
    device to decode, or (index, None, (reason code, sentence))."""

    def __init__(
        self, items: pd.DataFrame, resolution: int, max_pixels: int | None, jpeg_draft: bool, raw_jpeg: bool
    ):
        self.paths = items["source"].tolist()
        self.digests = items["digest"].tolist()
        # cn_clip's transform is Resize, _convert_to_rgb, ToTensor, Normalize: its PIL steps
        # run here, its tensor steps (`normalise`) on the device.
        self.resize_to_rgb = Compose(image_transform(resolution).transforms[:2])
        self.max_pixels = max_pixels
        self.draft_size = 2 * resolution if jpeg_draft else None
        self.raw_jpeg = raw_jpeg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            data = read_image_bytes(path)
            if self.digests[index] is not None and content_digest(data) != self.digests[index]:
                # The file changed after ingest registered it: the new bytes have their own shard.
                stale = f"{path}: file content changed since this shard was made"
                return index, None, ("stale", stale)
            if self.raw_jpeg and is_complete_plain_jpeg(data):
                # The same acceptance rule as the PIL path (the decompression-bomb guard),
                # from the header, before the device decodes anything.
                open_image(data, path, self.max_pixels)
                return index, "jpeg", torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return index, "pixels", self.pil_pixels(data, path)
        except ImageRejected as rejected:
            return index, None, (rejected.code, rejected.message)

    def pil_pixels(self, data: bytes, source: str) -> torch.Tensor:
        """Give the resized uint8 CHW pixels of image bytes by the PIL steps of cn_clip's own
        transform; `normalise` on the device does the rest."""
        return pil_to_tensor(self.resize_to_rgb(decode_image(data, source, self.max_pixels, self.draft_size)))


def _collate(batch):
    pixels = [(i, tensor) for i, kind, tensor in batch if kind == "pixels"]
    jpegs = [(i, raw) for i, kind, raw in batch if kind == "jpeg"]
    failures = [(i, why) for i, kind, why in batch if kind is None]
    stacked = torch.stack([tensor for _, tensor in pixels]) if pixels else None
    return [i for i, _ in pixels], stacked, [i for i, _ in jpegs], [raw for _, raw in jpegs], failures


def inference_autocast(device: str):
    """Give the autocast context of inference: fp16 on CUDA, none on the CPU (no faster there)."""
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


def inference_precision(device: str, model: Encoder | None = None, kind: str = IMAGES) -> str:
    """Give the precision embeddings of `kind` are computed in on `device`:
    `inference_autocast`'s for torch, the exported tower's for ONNX Runtime (fp32 or int8)."""
    if isinstance(model, OnnxClip):
        return model.precision["image" if kind == IMAGES else "text"]
    return "fp16" if device == "cuda" else "fp32"


def check_one_precision(output: str | os.PathLike, precision: str, tag: str, kind: str | None = None) -> None:
    """Refuse to write a shard of another precision than the shards of its kind (images or
    captions; None: any) already under its model tag.

    fp16 (CUDA) and fp32 (CPU) embeddings of the same item differ in the 3rd-4th digit: mixed
    under one tag, a gallery would rank items by which device encoded them. The tag's
    folder is results/features/<tag>/<collection>/<shard>.parquet; only files there that are
    feature shards of this tag count (on an H200, a shard list beside an output was once
    taken for an fp32 shard).
    """
    from tuwen.files.parquet import read_metadata

    tag_folder = Path(output).parent.parent
    for other in sorted(tag_folder.glob("*/*.parquet")):
        if other == Path(output):
            continue
        metadata = read_metadata(other)
        if metadata.get("model_tag") != tag or (kind is not None and metadata.get("kind") != kind):
            continue
        found = metadata.get("precision", "fp32")  # before precision was recorded: CPU only
        if found != precision:
            raise TuwenError(
                f"{output}: would be encoded in {precision}, but {other} under the same model tag was "
                f"encoded in {found}; one tag never mixes precisions. Encode on the device the tag "
                f"was made on (encode.device), or delete {tag_folder} to re-encode it all here"
            )
        return  # every shard was checked when it was written: one is enough


@dataclass
class ImageBatch:
    """One batch of model input on the device, the item positions its rows hold (in order),
    and the items of the batch no decoder could read: (position, reason code, sentence)."""

    pixels: torch.Tensor | None
    positions: list[int]
    refused: list[tuple[int, str, str]]


def image_batches(
    items: pd.DataFrame,
    resolution: int,
    device: str,
    batch_size: int,
    num_workers: int,
    max_pixels: int | None,
    jpeg_draft: bool = False,
    jpeg_decode_device: str | None = None,
) -> Iterator[ImageBatch]:
    """Read, decode and preprocess the images of `items` (columns digest, source = path) into
    model input on `device`, batch by batch.

    Workers read files and decode them with PIL, refusing those of more than `max_pixels`
    pixels (None: images ingest accepted under the run's limit); with `jpeg_decode_device` (cuda: nvjpeg),
    plain JPEGs are instead decoded, resized and normalised there in batches, and only
    other files go through PIL. A file whose bytes no longer match its digest is refused
    as stale (digest None: no check).
    """
    dataset = _ImageItems(items, resolution, max_pixels, jpeg_draft, raw_jpeg=jpeg_decode_device is not None)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device == "cuda",
    )
    for pixel_indices, pixels, jpeg_indices, jpegs, failures in loader:
        refused = [(i, code, reason) for i, (code, reason) in failures]
        parts, positions = [], []
        if pixels is not None:
            parts.append(pixels.to(device, non_blocking=True))
            positions += pixel_indices
        if jpegs:
            assert jpeg_decode_device is not None  # raw JPEGs come only for a device to decode
            decoded, kept, unreadable = decode_jpegs(
                jpegs,
                [dataset.paths[i] for i in jpeg_indices],
                jpeg_decode_device,
                resolution,
                dataset.pil_pixels,
            )
            refused += [(jpeg_indices[p], code, reason) for p, code, reason in unreadable]
            if decoded is not None:
                parts.append(decoded.to(device))
                positions += [jpeg_indices[p] for p in kept]
        yield ImageBatch(normalise(torch.cat(parts)) if parts else None, positions, refused)


def encode_images(
    model: Encoder,
    items: pd.DataFrame,
    resolution: int,
    device: str,
    batch_size: int,
    num_workers: int,
    max_pixels: int | None,
    jpeg_draft: bool = False,
    progress: bool = True,
    jpeg_decode_device: str | None = None,
) -> EncodedItems:
    """Encode the images of `items` (columns id, digest, source = path), read as
    `image_batches` reads them. Embeddings stay on the device until the end: no per-batch
    synchronisation."""
    batches = image_batches(
        items, resolution, device, batch_size, num_workers, max_pixels, jpeg_draft, jpeg_decode_device
    )
    ids, digests = items["id"].tolist(), items["digest"].tolist()
    result = EncodedItems()
    # Filled batch by batch, and left on the device until the end (see encode_texts).
    embeddings = torch.empty((len(items), embedding_dim(model)), device=device)
    total = -(-len(items) // batch_size)
    with torch.inference_mode(), inference_autocast(device):
        for batch in tqdm(
            batches,
            total=total,
            desc="images",
            unit="batch",
            file=sys.stderr,
            disable=not progress,
            mininterval=5,
        ):
            result.skipped.extend((ids[i], code, reason) for i, code, reason in batch.refused)
            if batch.pixels is None:
                continue
            filled = len(result.ids)
            embeddings[filled : filled + len(batch.positions)] = model.encode_image(batch.pixels)
            result.ids.extend(ids[i] for i in batch.positions)
            result.digests.extend(digests[i] for i in batch.positions)
    result.embeddings = embeddings[: len(result.ids)].float().cpu().numpy()
    return result


def cn_clip_text(caption: str) -> str:
    """Give a caption as cn_clip's training and evaluation read it before tokenizing
    (`_preprocess_text` in cn_clip/training/data.py and cn_clip/eval/data.py): lower case,
    curly double quotes made straight."""
    return caption.lower().replace("\u201c", '"').replace("\u201d", '"')


def tokenize_captions(captions: list[str]) -> torch.Tensor:
    """Give cn_clip's tokens of captions, as its extract_features.py makes them (context 52)."""
    return tokenize([cn_clip_text(str(caption)) for caption in captions], context_length=CONTEXT_LENGTH)


def encode_texts(
    model: Encoder, items: pd.DataFrame, device: str, batch_size: int = 256, progress: bool = True
) -> EncodedItems:
    """Encode the captions of `items` (columns id, digest, source = caption)."""
    captions = items["source"].tolist()
    # One array for all rows, filled batch by batch: keeping each batch's output tensor
    # instead pinned ~100 KB of freed activations per caption (3.5 GB for 50,000).
    embeddings = torch.empty((len(captions), embedding_dim(model)), device=device)
    with torch.inference_mode(), inference_autocast(device):
        starts = range(0, len(captions), batch_size)
        for start in tqdm(
            starts, desc="texts", unit="batch", file=sys.stderr, disable=not progress, mininterval=5
        ):
            tokens = tokenize_captions(captions[start : start + batch_size])
            embeddings[start : start + len(tokens)] = model.encode_text(tokens.to(device))
    return EncodedItems(
        ids=items["id"].tolist(),
        digests=items["digest"].tolist(),
        embeddings=embeddings.float().cpu().numpy(),
    )


def encode_caption(model: Encoder, text: str) -> np.ndarray:
    """Give one caption's L2-normalised embedding on the CPU (a live query, not a shard)."""
    return encode_captions(model, [text])[0]


def encode_captions(model: Encoder, texts: list[str]) -> np.ndarray:
    """Give live queries' L2-normalised embeddings on the CPU, one forward pass for all (the
    server's concurrent queries: 8 of tuwen-tiny-512 take 11.5 ms on one core, one 2.7)."""
    with torch.inference_mode():
        tokens = tokenize_captions(texts)
        return l2_normalised(model.encode_text(tokens).float().numpy())


def encode_picture(model: Encoder, picture: Image.Image, resolution: int) -> np.ndarray:
    """Give one decoded image's L2-normalised embedding on the CPU, by cn_clip's own transform
    (the PIL path of `encode_images`)."""
    with torch.inference_mode():
        pixels = image_transform(resolution)(picture).unsqueeze(0)
        return l2_normalised(model.encode_image(pixels).float().numpy())[0]


def feature_metadata(card: ModelCard, model: Encoder, kind: str) -> dict:
    """Give the file metadata of a feature shard: which model, weights and software made it."""
    return {
        **card.as_dict(),
        "model_tag": card.tag,
        "kind": kind,
        "logit_scale": logit_scale(model),
        "cn_clip_version": version("cn_clip"),
        "torch_version": torch.__version__,
    }


def load_encoder(
    card: ModelCard,
    device: str,
    towers: str | os.PathLike | None = None,
    backend: str | None = None,
    threads: int = 1,
    checkpoint: str | os.PathLike | None = None,
) -> tuple[Encoder, str, str]:
    """Give what encodes for a model card: its exported towers in ONNX Runtime or cn_clip's
    model in torch (from `checkpoint`, default the card's), as `choose_backend` decides for
    `backend` (None: encode.backend's default); with the device it runs on and why."""
    from tuwen.run.schema import schema_default

    backend = backend or schema_default("encode.backend")
    device = pick_device(device)
    chosen, why = choose_backend(backend, device, read_towers(towers) if towers else None)
    if chosen == ONNXRUNTIME:
        assert towers is not None
        return OnnxClip(towers, threads), "cpu", why
    return load_model(card.arch, checkpoint or card.checkpoint, device), device, why


def encode_shard(
    shard_list: str | os.PathLike,
    model_card: str | os.PathLike,
    output: str | os.PathLike,
    kind: str,
    *,
    device: str,
    batch_size: int,
    num_workers: int = 0,
    max_pixels: int | None = None,
    jpeg_draft: bool = False,
    gpu_jpeg_decode: bool = True,
    towers: str | os.PathLike | None = None,
    backend: str | None = None,
) -> EncodedItems:
    """Encode one shard's item list (`kind` IMAGES or TEXTS) and write its feature shard.

    Images are read with `num_workers` decode workers under the run's pixel limit
    (`max_pixels`, which images need); on CUDA with `gpu_jpeg_decode`, plain JPEGs are
    decoded and resized on the GPU. `towers` (the model's exported towers.json) and
    `backend` choose what runs the model (`load_encoder`).
    """
    card = ModelCard.read(model_card)
    model, device, why = load_encoder(card, device, towers, backend, torch.get_num_threads())
    backend_used = "onnxruntime" if isinstance(model, OnnxClip) else "torch"
    logging.info("%s encodes on %s: %s", backend_used, device, why)
    precision = inference_precision(device, model, kind)
    check_one_precision(output, precision, card.tag, kind)
    items = read_table(shard_list).to_pandas()
    try:
        if kind == IMAGES:
            if max_pixels is None:
                raise ValueError("encoding images needs the run's pixel limit (max_pixels)")
            encoded = encode_images(
                model,
                items,
                card.arch.resolution,
                device,
                batch_size,
                num_workers,
                max_pixels,
                jpeg_draft,
                jpeg_decode_device="cuda" if device == "cuda" and gpu_jpeg_decode else None,
            )
        elif kind == TEXTS:
            encoded = encode_texts(model, items, device, batch_size)
        else:
            raise ValueError(f"kind must be {IMAGES} or {TEXTS}, got {kind}")
    except torch.OutOfMemoryError:
        raise TuwenError(
            f"out of GPU memory encoding {shard_list} at encode.batch_size {batch_size}: lower it "
            "(a speed-only setting: nothing already encoded is redone)"
        ) from None
    metadata = feature_metadata(card, model, kind)
    metadata["precision"] = precision
    metadata["backend"] = backend_used
    if kind == IMAGES:
        # How the pixels were read: what else, besides the model, these embeddings depend on.
        metadata["image_decoding"] = {
            "max_pixels": max_pixels,
            "jpeg_draft": jpeg_draft,
            "gpu_jpeg_decode": device == "cuda" and gpu_jpeg_decode,
        }
    # Items that could not be encoded travel with the shard, so the run's accounting can
    # name each one with its reason without reading logs.
    metadata["not_encoded"] = [
        {"id": item_id, "reason_code": code, "reason": reason} for item_id, code, reason in encoded.skipped
    ]
    assert encoded.embeddings is not None
    write_features(output, encoded.ids, encoded.embeddings, encoded.digests, metadata)
    return encoded
