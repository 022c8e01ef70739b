"""Approximate search of a large gallery: a faiss IVF index of one channel's feature shards,
grown by segments so that new shards are added without rebuilding what is there.

- **Training.** The coarse quantizer (`lists` centroids, found through an HNSW graph) and
  the 8-bit scalar quantizer of the codes are trained on the first `T` shards, `T` the
  largest power of `retrain_growth` not above the shard count: as a collection grows the
  index is retrained when it has grown that many times since its training (its centroids
  then describe a quarter or less of it), and never otherwise.
- **Segments.** The shards are covered by segments whose sizes are powers of
  `segment_base` shards, the shard count written in that base (biggest first): 61 shards
  in base 4 are 3 x 16 + 3 x 4 + 1. A new shard adds a segment of one; `segment_base`
  segments of one size are merged into one of the next. Each segment is its own file, one
  workflow job; adding 1% of the items rewrites at most what the carries of that addition
  touch.
- **Search.** The query's nearest `nprobe` centroids are found once, then each segment's
  lists are scanned (memory-mapped: the server's memory holds what queries touch, not the
  index) and the best `n` of all segments kept. A row's id in the index is
  `shard ordinal << 32 | row in the shard`; rows a later shard superseded (an image whose
  content changed) are dropped by the caller, which knows the collection's current items.

Ties break by row id, and results are approximate: `describe` measures recall@10 against
exact search of the same shards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuwen.files.parquet import read_features, row_count
from tuwen.ranking.recall import neighbour_recall

ROW_BITS = 32
MAX_LISTS = 4096  # beyond, training k-means on 2 cores takes longer than the encoding
POINTS_PER_LIST = 40  # training sample per centroid (faiss warns below 39)


@dataclass(frozen=True)
class IndexOptions:
    """The index settings (config `index`; their defaults are the schema's)."""

    lists: int | None  # None: auto, from the items trained on
    nprobe: int
    candidates: int
    retrain_growth: int
    segment_base: int
    retrain_drift: float

    @classmethod
    def from_config(cls, index: dict) -> IndexOptions:
        """Read the options from a config's (or a settings file's) `index` section."""
        return cls(
            lists=None if index["lists"] == "auto" else int(index["lists"]),
            nprobe=int(index["nprobe"]),
            candidates=int(index["candidates"]),
            retrain_growth=int(index["retrain_growth"]),
            segment_base=int(index["segment_base"]),
            retrain_drift=float(index["retrain_drift"]),
        )

    @classmethod
    def defaults(cls, **changes: Any) -> IndexOptions:
        """Give the schema's default options, with `changes` (for benchmarks and tests)."""
        from dataclasses import replace

        from tuwen.run.schema import schema_default

        return replace(cls.from_config(schema_default("index")), **changes)


def trained_shards(shard_count: int, growth: int) -> int:
    """Give how many of the first shards the index is trained on: the largest power of
    `growth` not above `shard_count` (a retraining each time the collection grows `growth`-fold)."""
    if shard_count < 1:
        return 0
    trained = 1
    while trained * growth <= shard_count:
        trained *= growth
    return trained


def planned_training(shard_count: int, growth: int, previous: dict | None) -> int:
    """Give how many first shards the index is trained on, from the shard count and the
    index's last description (`previous`, index.json's `index`): `trained_shards`, or the
    last training if later, or every shard of the last description when it found the
    centroids drifted (`retrain_due`). A training never moves back."""
    trained = trained_shards(shard_count, growth)
    if previous:
        last = previous["shards"] if previous.get("retrain_due") else previous["trained_on_shards"]
        trained = max(trained, min(int(last), shard_count))
    return trained


def segment_plan(shard_count: int, segment_base: int) -> list[tuple[int, int]]:
    """Give each segment as (first shard, shard count): `shard_count` written in base `segment_base`,
    biggest segments first."""
    segments, start = [], 0
    size = 1
    while size * segment_base <= shard_count:
        size *= segment_base
    while start < shard_count:
        while size > shard_count - start:
            size //= segment_base
        segments.append((start, size))
        start += size
    return segments


def auto_lists(items: int) -> int:
    """Give the number of coarse centroids for `items` trained on: a power of two near
    4 sqrt(items), with enough training points per centroid, at most MAX_LISTS."""
    if items < POINTS_PER_LIST * 2:
        return 1
    target = min(4 * math.sqrt(items), items / POINTS_PER_LIST, MAX_LISTS)
    lists = 2 ** int(round(math.log2(target)))
    return max(1, lists // 2 if lists * POINTS_PER_LIST > items else lists)


def factory(lists: int) -> str:
    """Give the faiss index_factory string: IVF lists found through HNSW, 8-bit codes."""
    return f"IVF{lists}_HNSW32,SQ8" if lists > 1 else "IVF1,SQ8"


def row_ids(ordinal: int, rows: int) -> np.ndarray:
    """Give the index ids of a shard's rows: the shard's ordinal in the high bits."""
    return (np.int64(ordinal) << ROW_BITS) + np.arange(rows, dtype=np.int64)


def split_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give (shard ordinal, row) of index ids."""
    return ids >> ROW_BITS, ids & ((1 << ROW_BITS) - 1)


def training_sample(shards: Sequence[str | Path], lists: int | None, seed: int) -> tuple[np.ndarray, int]:
    """Give the vectors to train on (at most POINTS_PER_LIST per centroid, drawn evenly from
    every shard) and the number of lists."""
    sizes = [row_count(path) for path in shards]
    items = sum(sizes)
    lists = lists or auto_lists(items)
    wanted = min(items, max(lists * POINTS_PER_LIST, 1))
    rng = np.random.default_rng(seed)
    parts = []
    for path, size in zip(shards, sizes, strict=True):
        take = round(wanted * size / items) if items else 0
        if take:
            vectors = read_features(path).embeddings
            parts.append(vectors[np.sort(rng.choice(size, min(take, size), replace=False))])
    sample = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return np.ascontiguousarray(sample, dtype=np.float32), max(1, min(lists, len(sample)))


def train(sample: np.ndarray, lists: int, threads: int = 1) -> Any:
    """Give an empty index trained on `sample` (its coarse centroids and code ranges)."""
    import faiss

    faiss.omp_set_num_threads(max(1, threads))
    index = faiss.index_factory(sample.shape[1], factory(lists), faiss.METRIC_INNER_PRODUCT)
    index.train(sample)
    return index


def build_segment(
    trained_path: str | Path, shards: Iterable[tuple[int, str | Path]], threads: int = 1
) -> Any:
    """Give the trained index with every row of `shards` ((ordinal, feature shard) pairs) added,
    one shard in memory at a time."""
    import faiss

    faiss.omp_set_num_threads(max(1, threads))
    index = faiss.read_index(str(trained_path))
    for ordinal, path in shards:
        vectors = np.ascontiguousarray(read_features(path).embeddings, dtype=np.float32)
        index.add_with_ids(vectors, row_ids(ordinal, len(vectors)))
    return index


def write_index(index: Any, path: str | Path) -> None:
    import faiss

    from tuwen.files.atomic import atomic_path

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


class SegmentedIndex:
    """The segments of one index, memory-mapped, searched as one."""

    def __init__(self, trained: str | Path, segments: Sequence[str | Path], nprobe: int):
        import faiss

        # One thread a search: a server's concurrency is its requests', and OpenMP threads
        # inside each of them only contend for the same cores.
        faiss.omp_set_num_threads(1)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
        self._trained = faiss.read_index(str(trained))
        self.quantizer = faiss.extract_index_ivf(self._trained).quantizer
        self.nprobe = min(nprobe, faiss.extract_index_ivf(self._trained).nlist)
        self._segments = [faiss.read_index(str(path), flags) for path in segments]
        self.segments = [faiss.extract_index_ivf(index) for index in self._segments]
        for segment in self.segments:
            segment.nprobe = self.nprobe
        self.items = sum(segment.ntotal for segment in self.segments)
        if hasattr(self.quantizer, "hnsw"):
            # The HNSW graph's breadth when finding the nearest centroids.
            faiss.downcast_index(self.quantizer).hnsw.efSearch = max(64, 2 * self.nprobe)

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Give each query's best `n` (scores, ids), best first, ties by id; -1 ids pad a short row."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        centroid_scores, lists = self.quantizer.search(queries, self.nprobe)
        found = [segment.search_preassigned(queries, n, lists, centroid_scores) for segment in self.segments]
        scores = np.concatenate([segment_scores for segment_scores, _ in found], axis=1)
        ids = np.concatenate([segment_ids for _, segment_ids in found], axis=1)
        scores = np.where(ids < 0, -np.inf, scores)
        # Best first, then by id: a deterministic merge of the segments' lists.
        order = np.lexsort((ids, -scores), axis=1)[:, :n]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def exact_top(queries: np.ndarray, shards: Iterable[tuple[int, str | Path]], k: int) -> np.ndarray:
    """Give each query's exact top-`k` index ids (float32 inner products, ties by id), one
    shard in memory at a time."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for ordinal, path in shards:
        vectors = read_features(path).embeddings
        scores = queries @ vectors.T
        ids = np.broadcast_to(row_ids(ordinal, len(vectors)), scores.shape)
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, ids], axis=1)
        order = np.lexsort((ids, -scores), axis=1)[:, :k]
        best_scores, best_ids = (
            np.take_along_axis(scores, order, axis=1),
            np.take_along_axis(ids, order, axis=1),
        )
    return best_ids


def latencies(index: SegmentedIndex, queries: np.ndarray, n: int) -> tuple[float, float]:
    """Give the p50 and p99 of one query's search, in milliseconds, one query at a time."""
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query[None, :], n)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def recall_queries(
    query_shards: Sequence[str | Path],
    gallery_shards: Sequence[tuple[int, str | Path]],
    count: int,
    seed: int,
) -> tuple[np.ndarray, str]:
    """Give the queries recall is measured on, and what they are: a task's own queries (the
    first `count` of its shards) when the gallery has a task, else `count` gallery items
    drawn evenly ("more like this")."""
    if query_shards:
        vectors = np.concatenate([read_features(path).embeddings for path in query_shards[:4]])
        return vectors[:count], "the task's queries"
    rng = np.random.default_rng(seed)
    per_shard = max(1, math.ceil(count / max(1, len(gallery_shards))))
    picked = []
    for _, path in gallery_shards:
        vectors = read_features(path).embeddings
        picked.append(vectors[rng.choice(len(vectors), min(per_shard, len(vectors)), replace=False)])
        if sum(len(p) for p in picked) >= count:
            break
    return np.concatenate(picked)[:count], "gallery items"


def describe(
    trained: str | Path,
    segments: Sequence[str | Path],
    gallery_shards: Sequence[tuple[int, str | Path]],
    query_shards: Sequence[str | Path],
    options: IndexOptions,
    run: Path,
    queries: int = 200,
    sample_seed: int = 0,
) -> dict:
    """Give the index's description as the server reads it, with what was measured: recall@10
    of the index's own top 10 and of the exact top 10 among its `candidates`, and the p50 /
    p99 of one query's search, on `queries` queries."""
    index = SegmentedIndex(trained, segments, options.nprobe)
    trained_on = int(Path(trained).stem.removeprefix("trained-"))
    fit = centroid_fit(index, gallery_shards, trained_on, sample_seed)
    sample, source = recall_queries(query_shards, gallery_shards, queries, sample_seed)
    exact = exact_top(sample, gallery_shards, 10)
    _, found = index.search(sample, max(10, options.candidates))
    p50, p99 = latencies(index, sample[:100], max(10, options.candidates))
    trained_fit, since_fit = fit["trained"], fit["since"]
    drift = trained_fit - since_fit if trained_fit is not None and since_fit is not None else 0.0
    return {
        "factory": factory(faiss_lists(index)),
        "lists": faiss_lists(index),
        "nprobe": index.nprobe,
        "candidates": options.candidates,
        "items": index.items,
        "trained": _relative(trained, run),
        "trained_on_shards": trained_on,
        "shards": len(gallery_shards),
        "retrain_at_shards": trained_on * options.retrain_growth,
        # How near the rows lie to their centroid, in the shards trained on and those added
        # since: when the new rows lie farther by more than retrain_drift, the next run retrains.
        "centroid_fit": {k: None if v is None else round(v, 4) for k, v in fit.items()},
        "retrain_due": bool(drift > options.retrain_drift),
        "segments": [_relative(s, run) for s in segments],
        "shards_indexed": [[number, _relative(path, run)] for number, path in gallery_shards],
        "recall_queries": len(sample),
        "recall_query_source": source,
        "recall@10": round(neighbour_recall(found[:, :10], exact), 4),
        "candidates_recall@10": round(neighbour_recall(found, exact), 4),
        "search_ms": {"p50": round(p50, 3), "p99": round(p99, 3)},
    }


def centroid_fit(
    index: SegmentedIndex,
    shards: Sequence[tuple[int, str | Path]],
    trained_on: int,
    seed: int,
    rows: int = 2000,
) -> dict[str, float | None]:
    """Give the mean inner product of rows with their nearest centroid: over `rows` drawn from
    (at most 20 of) the shards trained on, and from those added since (None when none are)."""
    rng = np.random.default_rng(seed)

    def mean_fit(part: Sequence[tuple[int, str | Path]]) -> float | None:
        if not part:
            return None
        picked = sorted({round(i) for i in np.linspace(0, len(part) - 1, min(len(part), 20))})
        drawn = []
        for position in picked:
            vectors = read_features(part[position][1]).embeddings
            take = min(len(vectors), max(1, rows // len(picked)))
            drawn.append(vectors[rng.choice(len(vectors), take, replace=False)])
        best, _ = index.quantizer.search(np.ascontiguousarray(np.concatenate(drawn), dtype=np.float32), 1)
        return float(best.mean())

    return {"trained": mean_fit(shards[:trained_on]), "since": mean_fit(shards[trained_on:])}


def _relative(path: str | Path, run: Path) -> str:
    return str(Path(path).relative_to(run)) if Path(path).is_absolute() else str(path)


def faiss_lists(index: SegmentedIndex) -> int:
    return index.segments[0].nlist if index.segments else 0
