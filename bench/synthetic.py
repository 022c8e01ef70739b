"""Galleries of normalised embeddings with the structure of real ones, written as feature shards.

Uniform random vectors in 512 dimensions have no near neighbours to find, so they say nothing
about an approximate index. These are a mixture of clusters: each item is a cluster centre
plus isotropic noise, normalised. The centres are either a run's real embeddings (each one
the centre of a cluster) or, without a run, draws from a Gaussian whose spectrum falls off
as 1/rank, like that of CLIP embeddings. Cluster sizes follow a Zipf law, as photo archives
have a few big subjects and many small ones. Every shard is drawn from its own seed, so a
gallery of any size is written one shard at a time and never held whole in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuwen.data.shards import shard_name
from tuwen.files.parquet import l2_normalised, write_features
from tuwen.run.declaration import IMAGES


@dataclass(frozen=True)
class Mixture:
    """Cluster centres (unit rows), their weights, and the noise around them."""

    centres: np.ndarray
    weights: np.ndarray
    noise: float
    source: str

    @classmethod
    def spectral(cls, clusters: int, dim: int = 512, noise: float = 0.06, seed: int = 0) -> Mixture:
        """Centres from a Gaussian whose variance along its k-th axis falls as 1/k."""
        rng = np.random.default_rng(seed)
        scales = 1.0 / np.sqrt(np.arange(1, dim + 1))
        basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        centres = (rng.normal(size=(clusters, dim)) * scales) @ basis.T
        return cls(l2_normalised(centres), zipf_weights(clusters, seed), noise, "spectral Gaussian (1/k)")

    @classmethod
    def around(cls, embeddings: np.ndarray, noise: float = 0.06, seed: int = 0, source: str = "") -> Mixture:
        """Clusters centred on real embeddings (a run's feature shards)."""
        centres = l2_normalised(np.asarray(embeddings, dtype=np.float32))
        return cls(centres, zipf_weights(len(centres), seed), noise, source or "real embeddings")

    def draw(self, count: int, seed: int) -> np.ndarray:
        """Give `count` unit vectors drawn from the mixture."""
        rng = np.random.default_rng(seed)
        which = rng.choice(len(self.centres), size=count, p=self.weights)
        dim = self.centres.shape[1]
        noisy = self.centres[which] + rng.normal(scale=self.noise, size=(count, dim)).astype(np.float32)
        return l2_normalised(noisy)

    def text_like(self, count: int, seed: int, cosine: float) -> np.ndarray:
        """Give queries shifted from the mixture as captions' embeddings are from the images
        they describe: `cosine` of each to an item drawn from the mixture, the rest split
        between one direction shared by all of them and each query's own spread."""
        rng = np.random.default_rng(seed)
        base = self.draw(count, seed)
        offset = l2_normalised(rng.normal(size=(1, base.shape[1])).astype(np.float32))
        spread = l2_normalised(rng.normal(size=base.shape).astype(np.float32))
        rest = np.sqrt(1 - cosine**2)
        return l2_normalised(cosine * base + rest * (0.85 * offset + 0.53 * spread))

    def calibrated_text_like(
        self, count: int, seed: int, target: float, nearest: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, float]:
        """Give text-like queries whose mean cosine to their 100 nearest items is ~`target`
        (0.30: CLIP ViT-B/16's caption to its 100 nearest images, on COCO), and the `cosine`
        to their own item that gives it: a few proportional steps, each measured on 20
        queries by `nearest` (queries -> their 100 best exact scores)."""
        cosine = target
        for _ in range(4):
            scores = nearest(self.text_like(20, seed, cosine))
            cosine = float(np.clip(cosine * target / scores.mean(), 0.05, 0.95))
        return self.text_like(count, seed, cosine), cosine


def zipf_weights(count: int, seed: int) -> np.ndarray:
    ranks = np.random.default_rng(seed + 1).permutation(count) + 1
    weights = 1.0 / ranks**0.8
    return weights / weights.sum()


def write_gallery(
    mixture: Mixture, folder: Path, items: int, shard_size: int, tag: str, first_shard: int = 0
) -> list[tuple[int, Path]]:
    """Write `items` drawn items as feature shards (tuwen.files.parquet) numbered from `first_shard`;
    give each shard's (number, path). Ids are `item-<n>`, unique across shards."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for offset in range(0, items, shard_size):
        number = first_shard + offset // shard_size
        count = min(shard_size, items - offset)
        vectors = mixture.draw(count, seed=1000 + number)
        start = number * shard_size
        ids = [f"item-{start + i:09d}" for i in range(count)]
        path = folder / f"{shard_name(number)}.parquet"
        write_features(path, ids, vectors, ids, {"model_tag": tag, "kind": IMAGES}, normalise=False)
        written.append((number, path))
    return written
