"""Encode shards: images or captions through a CN-CLIP model into feature shards."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version

import numpy as np
import pandas as pd
import torch
from cn_clip.clip import image_transform, tokenize
from cn_clip.clip.model import CLIP
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tuwen.architectures import CONTEXT_LENGTH
from tuwen.images import DEFAULT_MAX_PIXELS, ImageRejected, load_image
from tuwen.models import ModelCard, load_model
from tuwen.parquet import read_table, write_features


@dataclass
class EncodedItems:
    """Embeddings of the items that could be encoded, and why the others could not."""

    ids: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def pick_device(requested: str) -> str:
    """Give `cuda` or `cpu` for a config value of auto, cuda or cpu."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for device cuda, but torch sees no CUDA device")
    return requested


class _ImageItems(Dataset):
    def __init__(self, items: pd.DataFrame, resolution: int, max_pixels: int, jpeg_draft: bool):
        self.paths = items["source"].tolist()
        self.digests = items["digest"].tolist()
        self.transform = image_transform(resolution)
        self.max_pixels = max_pixels
        self.draft_size = 2 * resolution if jpeg_draft else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image, digest = load_image(self.paths[index], self.max_pixels, self.draft_size)
        except ImageRejected as rejected:
            return index, None, f"{rejected.code}: {rejected.message}"
        if digest != self.digests[index]:
            # The file changed after ingest registered it: the new bytes have their own shard.
            return index, None, "stale: file content changed since this shard was made"
        return index, self.transform(image), ""


def _collate(batch):
    indices = [i for i, tensor, _ in batch if tensor is not None]
    tensors = [tensor for _, tensor, _ in batch if tensor is not None]
    failures = [(i, why) for i, tensor, why in batch if tensor is None]
    return indices, (torch.stack(tensors) if tensors else None), failures


def _autocast(device: str):
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


def encode_images(
    model: CLIP,
    items: pd.DataFrame,
    resolution: int,
    device: str,
    batch_size: int = 64,
    num_workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    jpeg_draft: bool = False,
    progress: bool = True,
) -> EncodedItems:
    """Encode the images of `items` (columns id, digest, source = path); decode runs in workers."""
    dataset = _ImageItems(items, resolution, max_pixels, jpeg_draft)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device == "cuda",
    )
    ids, digests = items["id"].tolist(), items["digest"].tolist()
    result = EncodedItems()
    chunks = []
    with torch.inference_mode(), _autocast(device):
        for indices, batch, failures in tqdm(
            loader, desc="images", unit="batch", file=sys.stderr, disable=not progress, mininterval=5
        ):
            result.skipped.extend((ids[i], why) for i, why in failures)
            if batch is None:
                continue
            features = model.encode_image(batch.to(device, non_blocking=True))
            chunks.append(features.float().cpu().numpy())
            result.ids.extend(ids[i] for i in indices)
            result.digests.extend(digests[i] for i in indices)
    result.embeddings = _stack(chunks, model)
    return result


def encode_texts(
    model: CLIP, items: pd.DataFrame, device: str, batch_size: int = 256, progress: bool = True
) -> EncodedItems:
    """Encode the captions of `items` (columns id, digest, source = caption)."""
    captions = items["source"].tolist()
    chunks = []
    with torch.inference_mode(), _autocast(device):
        starts = range(0, len(captions), batch_size)
        for start in tqdm(
            starts, desc="texts", unit="batch", file=sys.stderr, disable=not progress, mininterval=5
        ):
            tokens = tokenize(captions[start : start + batch_size], context_length=CONTEXT_LENGTH)
            chunks.append(model.encode_text(tokens.to(device)).float().cpu().numpy())
    return EncodedItems(
        ids=items["id"].tolist(), digests=items["digest"].tolist(), embeddings=_stack(chunks, model)
    )


def _stack(chunks: Sequence[np.ndarray], model: CLIP) -> np.ndarray:
    if chunks:
        return np.concatenate(chunks)
    return np.zeros((0, model.text_projection.shape[1]), dtype=np.float32)


def feature_metadata(card: ModelCard, model: CLIP, kind: str) -> dict:
    """Give the file metadata of a feature shard: which model, weights and software made it."""
    return {
        **card.as_dict(),
        "model_tag": card.tag,
        "kind": kind,
        "logit_scale": float(model.logit_scale.exp().item()),
        "cn_clip_version": version("cn_clip"),
        "torch_version": torch.__version__,
    }


def encode_shard(
    shard_list: str | os.PathLike,
    model_card: str | os.PathLike,
    output: str | os.PathLike,
    kind: str,
    device: str = "auto",
    batch_size: int = 64,
    num_workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    jpeg_draft: bool = False,
) -> EncodedItems:
    """Encode one shard's item list (`kind` image or text) and write its feature shard."""
    card = ModelCard.read(model_card)
    device = pick_device(device)
    model = load_model(card.arch, card.checkpoint, device)
    items = read_table(shard_list).to_pandas()
    if kind == "image":
        encoded = encode_images(
            model, items, card.arch.resolution, device, batch_size, num_workers, max_pixels, jpeg_draft
        )
    elif kind == "text":
        encoded = encode_texts(model, items, device, batch_size)
    else:
        raise ValueError(f"kind must be image or text, got {kind}")
    write_features(
        output, encoded.ids, encoded.embeddings, encoded.digests, feature_metadata(card, model, kind)
    )
    return encoded
