"""Fine-tuning data: the pairs, their validation split, and where image features come from.

Two image sources share one interface, so the training loop never asks which it has:
`PixelImages` decodes the pictures (streamed through DataLoader workers, or decoded once
into memory when they fit) and the image tower encodes them; `LockedImages` hands out
the base model's image features from its feature shards (locked-image tuning, CN-CLIP's
stage 1), with the image tower frozen.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch
from cn_clip.clip import image_transform
from cn_clip.clip.model import CLIP
from torch.utils.data import DataLoader, Dataset

from tuwen.clip.encode import encode_images, tokenize_captions
from tuwen.data.splits import is_validation
from tuwen.files.images import load_image

# Per optimiser step, its micro-batches as (images or image features, caption tokens).
MicroBatches = list[tuple[torch.Tensor, torch.Tensor]]


def training_pairs(pairs: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """Give the accepted pairs as (id, image_id, caption, path, digest), in file order; an
    image with several captions is in several pairs."""
    accepted = pairs[pairs["status"] == "ok"]
    ok_images = images[images["status"] == "ok"].set_index("image_id")
    joined = accepted.join(ok_images[["path", "digest"]], on="image_id", how="inner")
    return pd.DataFrame(
        {
            "id": joined["text_id"].to_numpy(),
            "image_id": joined["image_id"].to_numpy(),
            "caption": joined["caption"].to_numpy(),
            "path": joined["path"].to_numpy(),
            "digest": joined["digest"].to_numpy(),
        }
    )


def split_pairs(pairs: pd.DataFrame, val_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give (training, validation) pairs, chosen by a hash of the image id (the same split
    everywhere; an image's captions all fall on one side)."""
    validation = pairs["image_id"].map(lambda i: is_validation(i, val_fraction))
    train, val = pairs[~validation].reset_index(drop=True), pairs[validation].reset_index(drop=True)
    if len(train) < 2 or len(val) < 2:
        raise ValueError(
            f"need >= 2 training and validation pairs, got {len(train)} and {len(val)}; "
            "change train.val_fraction or add pairs"
        )
    return train, val


def split_by_step(batches: list[np.ndarray], batch_size: int) -> list[list[np.ndarray]]:
    """Give each global batch's micro-batches of at most `batch_size` rows."""
    return [[b[i : i + batch_size] for i in range(0, len(b), batch_size)] for b in batches]


class _PairImages(Dataset):
    def __init__(self, paths: list[str], tokens: torch.Tensor, resolution: int):
        self.paths = paths
        self.tokens = tokens
        self.transform = image_transform(resolution)
        self.resolution = resolution
        self.preloaded: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        if self.preloaded is not None:
            return self.preloaded[index], self.tokens[index]
        image, _ = load_image(self.paths[index], None)  # accepted at ingest
        return self.transform(image), self.tokens[index]

    def preload(self, budget_mb: int, workers: int) -> bool:
        """Decode every image once into memory when they fit in `budget_mb`; give whether they did."""
        needed_mb = len(self) * 3 * self.resolution**2 * 4 / 2**20
        if needed_mb > budget_mb:
            return False
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            tensors = list(pool.map(lambda p: self.transform(load_image(p, None)[0]), self.paths))
        self.preloaded = torch.stack(tensors)
        return True


class PixelImages:
    """Images decoded from their files and encoded by the model's image tower."""

    def __init__(self, train_pairs: pd.DataFrame, resolution: int, num_workers: int, preload_mb: int):
        tokens = tokenize_captions(train_pairs["caption"].tolist())
        self.dataset = _PairImages(train_pairs["path"].tolist(), tokens, resolution)
        self.num_workers = num_workers
        # Small sets (the demo) then train without decoding per epoch; large ones stream.
        self.preloaded = self.dataset.preload(preload_mb, num_workers)

    def prepare(self, model: CLIP) -> None:
        """Set up the model for this source before training (nothing to freeze)."""

    def train_mode(self, model: CLIP) -> None:
        model.train()

    def micro_batches(self, batches: list[np.ndarray], batch_size: int) -> Iterator[MicroBatches]:
        per_step = split_by_step(batches, batch_size)
        if self.dataset.preloaded is not None:
            for chunks in per_step:
                yield [(self.dataset.preloaded[c], self.dataset.tokens[c]) for c in chunks]
            return
        # One loader per epoch: its workers decode ahead while the model computes.
        flat = [c.tolist() for chunks in per_step for c in chunks]
        loader = iter(
            DataLoader(
                self.dataset,
                batch_sampler=flat,
                num_workers=self.num_workers,
                pin_memory=torch.cuda.is_available(),
            )
        )
        for chunks in per_step:
            yield [next(loader) for _ in chunks]

    def image_features(self, model: CLIP, images: torch.Tensor, device: str) -> torch.Tensor:
        return model.encode_image(images.to(device))

    def validation_embeddings(self, model: CLIP, val_images: pd.DataFrame, resolution: int, device: str):
        items = pd.DataFrame(
            {"id": val_images["image_id"], "digest": val_images["digest"], "source": val_images["path"]}
        )
        # The pairs' images were accepted at ingest, under the run's pixel limit.
        return encode_images(model, items, resolution, device, 64, 0, None, progress=False).embeddings


class LockedImages:
    """The base model's image features, read from its feature shards; the image tower is frozen."""

    def __init__(
        self,
        train_pairs: pd.DataFrame,
        features: dict[str, np.ndarray],
        val_pairs: pd.DataFrame,
        val_features: dict[str, np.ndarray],
    ):
        # Validation pairs declared apart have images of their own collection, whose ids may
        # repeat the training images' (CN-CLIP numbers each split's images): kept apart.
        for pairs, by_id in ((train_pairs, features), (val_pairs, val_features)):
            missing = [i for i in pairs["image_id"] if i not in by_id]
            if missing:
                raise ValueError(
                    f"locked-image tuning: no image features for {len(missing)} pairs, e.g. {missing[0]}"
                )
        self.features, self.val_features = features, val_features
        self.ids = train_pairs["image_id"].to_numpy()
        self.tokens = tokenize_captions(train_pairs["caption"].tolist())

    def prepare(self, model: CLIP) -> None:
        for parameter in model.visual.parameters():
            parameter.requires_grad_(False)

    def train_mode(self, model: CLIP) -> None:
        model.train()
        model.visual.eval()

    def micro_batches(self, batches: list[np.ndarray], batch_size: int) -> Iterator[MicroBatches]:
        for chunks in split_by_step(batches, batch_size):
            yield [
                (torch.from_numpy(np.stack([self.features[i] for i in self.ids[c]])), self.tokens[c])
                for c in chunks
            ]

    def image_features(self, model: CLIP, images: torch.Tensor, device: str) -> torch.Tensor:
        return images.to(device)

    def validation_embeddings(self, model: CLIP, val_images: pd.DataFrame, resolution: int, device: str):
        return np.stack([self.val_features[i] for i in val_images["image_id"]])


def locked_features(paths: list[str], images: pd.DataFrame) -> dict[str, np.ndarray]:
    """Give the base model's image embeddings by image id, for the current image bytes only."""
    from tuwen.files.parquet import read_features
    from tuwen.ranking.exact import select_features

    accepted = images[images["status"] == "ok"]
    current = pd.DataFrame({"id": accepted["image_id"].to_numpy(), "digest": accepted["digest"].to_numpy()})
    ids, embeddings, _ = select_features(current["id"].tolist(), current, [read_features(p) for p in paths])
    return dict(zip(ids, embeddings, strict=True))
