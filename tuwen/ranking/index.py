"""Approximate search of a large gallery: a faiss IVF index of one channel's feature shards,
grown by segments so that new shards are added without rebuilding what is there, its
candidates re-scored exactly.

- **Training.** The coarse quantizer (`lists` centroids, found through an HNSW graph; beyond
  4,096 lists trained by two-level k-means) and the codebook of the codes (4-bit fast-scan
  PQ, two dimensions a sub-quantizer: 128 bytes a 512-d row; or 8-bit scalar codes,
  `index.codes: sq8`) are trained on the first `T` shards, `T` the largest power of
  `retrain_growth` not above the shard count: as a collection grows the index is retrained
  when it has grown that many times since its training (its centroids then describe a
  quarter or less of it), and never otherwise. Every segment is built from the one trained
  file: a new segment trains nothing, and its file holds no centroids of its own.
- **Segments.** The shards are covered by segments whose sizes are powers of
  `segment_base` shards, the shard count written in that base (biggest first): 61 shards
  in base 4 are 3 x 16 + 3 x 4 + 1. A new shard adds a segment of one; `segment_base`
  segments of one size are merged into one of the next. Each segment is two files, one
  workflow job: its codes (a faiss index) and its rows in float16 (`write_rows`), read
  memory-mapped for re-scoring. Adding 1% of the items rewrites at most what the carries
  of that addition touch.
- **Search.** Loaded, the segments' codes are merged into one index (one scan a query, not
  one a segment). The query's nearest `nprobe` centroids are found once (queries of the
  other kind than the gallery's, a caption against photos, take `cross_modal_nprobe`: their
  nearest centroids are less often where their nearest items are); their lists are scanned
  by the codes, split between two threads in a large index when no other search is under
  way; the best `rescored` are scored again from their float16 rows, and the best `n` of
  those kept with those scores: the cosines of the rows, to float16's precision. The rows
  files are read into the page cache in the background at load where they fit. A row's id
  in the index is `shard ordinal << 32 | row in the shard`; rows a later shard superseded
  (an image whose content changed) are dropped by the caller, which knows the
  collection's current items.

Ties break by row id, and results are approximate: `describe` measures recall@10 against
exact search of the same shards, for each kind of query it can.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuwen.files.parquet import read_features, row_count
from tuwen.ranking.recall import neighbour_recall

ROW_BITS = 32
MAX_LISTS = 2**14  # 16,384; 10M items: ~610 codes a list (bench/README.md, make bench-index)
FLAT_KMEANS_LISTS = 4096  # more lists are trained by two-level k-means
PROBED_AT_LISTS = 4096  # index.nprobe is for this many lists; more lists probe (lists / it) ** (1/4) x
PREFETCH_SHARE = 0.8  # rows files are read into the page cache where they fit in this share of
# the memory available (MemAvailable counts the page cache it may reclaim)
POINTS_PER_LIST = 40  # training sample per centroid (faiss warns below 39)
CODES = ("pq4fs", "sq8")
MADV_POPULATE_READ = 22  # Linux's madvise advice (5.14+); Python 3.11's mmap does not name it
POPULATE_CHUNK = 1 << 26  # bytes of rows mapped a call (the GIL is free meanwhile)
ROWS_MAGIC = b"TUWENROWS1"
ROWS_ALIGN = 64  # the rows start at a multiple of this in a rows file
SEARCH_THREADS = 2  # threads one query's lists are scanned on, where it scans at least
HNSW_BREADTH = 1.0  # efSearch when finding a query's nearest centroids, per list probed
COARSE_BREADTH = 16  # and at least this
PARALLEL_CODES = 60_000  # this many codes: handing half to another thread costs ~0.1 ms, and
# saves half of ~3.5 ns a code (1M items, 15,600 codes: 0.33 ms alone, 0.31 split; bench/README.md)


@dataclass(frozen=True)
class IndexOptions:
    """The index settings (config `index`; their defaults are the schema's)."""

    lists: int | None  # None: auto, from the items trained on
    nprobe: int  # lists scanned for a query of the gallery's own kind
    cross_modal_nprobe: int  # and for a query of the other kind
    candidates: int
    rescored: int
    codes: str
    retrain_growth: int
    segment_base: int
    retrain_drift: float

    @classmethod
    def from_config(cls, index: dict) -> IndexOptions:
        """Read the options from a config's (or a settings file's) `index` section."""
        return cls(
            lists=None if index["lists"] == "auto" else int(index["lists"]),
            nprobe=int(index["nprobe"]),
            cross_modal_nprobe=int(index["cross_modal_nprobe"]),
            candidates=int(index["candidates"]),
            rescored=int(index["rescored"]),
            codes=str(index["codes"]),
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


def probes(nprobe: int, lists: int) -> int:
    """Give the lists a query scans in an index of `lists` lists for the setting `nprobe`, which
    is for PROBED_AT_LISTS lists or fewer: more lists, each holding fewer items, are probed
    (lists / PROBED_AT_LISTS) ** (1/4) times as many. Measured at 10M items in 16,384 lists
    (bench/README.md): nprobe 64 / 96 / 128 found recall@10 0.961 / 0.969 / 0.970 for image-like
    queries, 0.950 / 0.966 / 0.972 for text-like ones; 64 scales to 91, not sqrt's 128 (0.16-0.53 ms
    less a query in the sweeps, for no measurable recall). At most every list."""
    scaled = nprobe * (lists / PROBED_AT_LISTS) ** 0.25 if lists > PROBED_AT_LISTS else nprobe
    return max(1, min(lists, round(scaled)))


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


def auto_lists(items: int, growth: int = 1) -> int:
    """Give the number of coarse centroids for `items` trained on: a power of two near
    4 sqrt(items x growth), the most the index holds before its next training (a 1M gallery
    trained on its first 262,144 items gets 4,096 lists, as bench/index_sweep.py measured,
    not 2,048: 3.1% of the items scanned at nprobe 64 instead of 1.6%), with enough training
    points per centroid, at most MAX_LISTS."""
    if items < POINTS_PER_LIST * 2:
        return 1
    target = min(4 * math.sqrt(items * growth), items / POINTS_PER_LIST, MAX_LISTS)
    lists = 2 ** int(round(math.log2(target)))
    return max(1, lists // 2 if lists * POINTS_PER_LIST > items else lists)


def factory(lists: int, dim: int, codes: str) -> str:
    """Give the faiss index_factory string: IVF lists found through HNSW, and the codes: 4-bit
    fast-scan PQ of two dimensions a sub-quantizer, or 8-bit scalar codes."""
    if codes not in CODES:
        raise ValueError(f"index.codes: {codes!r} is not one of {', '.join(CODES)}")
    if codes == "pq4fs" and dim % 2:
        raise ValueError(f"index.codes pq4fs needs an even dimension, not {dim}; use sq8")
    coarse = f"IVF{lists}_HNSW32" if lists > 1 else "IVF1"
    return f"{coarse},SQ8" if codes == "sq8" else f"{coarse},PQ{dim // 2}x4fs"


def row_ids(ordinal: int, rows: int) -> np.ndarray:
    """Give the index ids of a shard's rows: the shard's ordinal in the high bits."""
    return (np.int64(ordinal) << ROW_BITS) + np.arange(rows, dtype=np.int64)


def split_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give (shard ordinal, row) of index ids."""
    return ids >> ROW_BITS, ids & ((1 << ROW_BITS) - 1)


def training_sample(
    shards: Sequence[str | Path], lists: int | None, seed: int, growth: int = 1
) -> tuple[np.ndarray, int]:
    """Give the vectors to train on (at most POINTS_PER_LIST per centroid, drawn evenly from
    every shard) and the number of lists (`lists`, or auto_lists with the index's `growth`)."""
    sizes = [row_count(path) for path in shards]
    items = sum(sizes)
    lists = lists or auto_lists(items, growth)
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


def train(sample: np.ndarray, lists: int, codes: str, threads: int = 1) -> Any:
    """Give an empty index trained on `sample`: its coarse centroids and its codebook. Beyond
    FLAT_KMEANS_LISTS lists the centroids come from two-level k-means (sqrt(lists) clusters,
    then each split in proportion to its points): one level's cost grows with lists x points,
    which at 16,384 lists on 655,360 points is hours on two cores; two levels take minutes."""
    import faiss

    faiss.omp_set_num_threads(max(1, threads))
    index = faiss.index_factory(
        sample.shape[1], factory(lists, sample.shape[1], codes), faiss.METRIC_INNER_PRODUCT
    )
    if lists > FLAT_KMEANS_LISTS:
        from faiss.contrib.clustering import two_level_clustering

        centroids, _ = two_level_clustering(sample, round(math.sqrt(lists)), lists, spherical=True, seed=1234)
        ivf = faiss.extract_index_ivf(index)
        ivf.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        # IndexIVF.train keeps a quantizer that already holds `lists` centroids and trains the codes.
    index.train(sample)
    return index


def build_segment(
    trained_path: str | Path, shards: Iterable[tuple[int, str | Path]], threads: int = 1
) -> Any:
    """Give the trained index with every row of `shards` ((ordinal, feature shard) pairs) added,
    one shard in memory at a time. The trained file's centroids and codebook are used as they
    are (a segment trains nothing, so that every segment's codes mean the same)."""
    import faiss

    faiss.omp_set_num_threads(max(1, threads))
    index = faiss.read_index(str(trained_path))
    if not index.is_trained:
        raise ValueError(f"{trained_path}: not a trained index")
    for ordinal, path in shards:
        vectors = np.ascontiguousarray(read_features(path).embeddings, dtype=np.float32)
        index.add_with_ids(vectors, row_ids(ordinal, len(vectors)))
    return index


def write_index(index: Any, path: str | Path) -> None:
    import faiss

    from tuwen.files.atomic import atomic_path

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def write_segment(index: Any, path: str | Path) -> None:
    """Write a segment's codes with an empty stand-in for its coarse quantizer: a loaded index
    merges its segments into the trained file's index (merge_segment), so that N segments
    cost one copy of the centroids, not N (32 MB each at 16,384 lists of 512 dimensions)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    quantizer, owned = ivf.quantizer, ivf.own_fields
    stand_in = faiss.IndexFlat(ivf.d, ivf.metric_type)
    ivf.own_fields = False
    ivf.quantizer = stand_in
    try:
        write_index(index, path)
    finally:
        ivf.quantizer = quantizer
        ivf.own_fields = owned


def rows_centre(index: Any) -> np.ndarray:
    """Give the point the rows are stored relative to: the mean of the index's coarse centroids
    (every segment's, as they share the trained quantizer)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    return faiss.downcast_index(ivf.quantizer).reconstruct_n(0, ivf.nlist).mean(axis=0).astype(np.float32)


def write_rows(shards: Sequence[tuple[int, str | Path]], path: str | Path, centre: np.ndarray) -> int:
    """Write a segment's rows for re-scoring its candidates, one shard in memory at a time; give
    the rows written. Each row is stored as its difference from `centre` (`rows_centre`), in
    float16: float16's rounding is then relative to what tells the rows apart, not to the
    direction they share (a gallery of near-copies, cosine 0.9999, keeps its order). The file:
    ROWS_MAGIC, the header's length (4 bytes, little endian), a JSON header (dim, centre, each
    shard's ordinal and row count, ordinals increasing), padding to ROWS_ALIGN, the rows."""
    from tuwen.files.atomic import atomic_path
    from tuwen.files.parquet import read_metadata

    counts = [[int(ordinal), row_count(shard)] for ordinal, shard in shards]
    if any(later[0] <= earlier[0] for earlier, later in zip(counts, counts[1:], strict=False)):
        raise ValueError(f"{path}: shard ordinals must increase, not {[c[0] for c in counts]}")
    dim = int(read_metadata(shards[0][1])["embedding_dim"]) if shards else 0
    centre = np.asarray(centre, dtype=np.float32)
    described = {"dim": dim, "dtype": "float16", "centre": [float(x) for x in centre], "shards": counts}
    header = json.dumps(described).encode()
    head = ROWS_MAGIC + struct.pack("<I", len(header)) + header
    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(head + b"\0" * (-len(head) % ROWS_ALIGN))
        for (_, shard), (_, count) in zip(shards, counts, strict=True):
            vectors = read_features(shard).embeddings
            if len(vectors) != count:
                raise ValueError(f"{shard}: {len(vectors)} rows, its footer says {count}")
            handle.write(np.ascontiguousarray(vectors - centre, dtype=np.float16).tobytes())
            written += count
    return written


def factory_of(ivf: Any) -> str:
    """Give the factory string of a trained IVF index (downcast)."""
    import faiss

    codes = "sq8" if isinstance(ivf, faiss.IndexIVFScalarQuantizer) else "pq4fs"
    return factory(ivf.nlist, ivf.d, codes)


class SegmentRows:
    """A segment's float16 rows, memory-mapped: read only for the candidates re-scored."""

    def __init__(self, path: str | Path):
        with open(path, "rb") as handle:
            magic = handle.read(len(ROWS_MAGIC))
            if magic != ROWS_MAGIC:
                raise ValueError(f"{path}: not a rows file of tuwen's index")
            (length,) = struct.unpack("<I", handle.read(4))
            header = json.loads(handle.read(length))
        start = len(ROWS_MAGIC) + 4 + length
        start += -start % ROWS_ALIGN
        counts = np.array(header["shards"], dtype=np.int64).reshape(-1, 2)
        self.path = Path(path)
        self.start = start
        self.centre = np.array(header["centre"], dtype=np.float32)
        self.ordinals = counts[:, 0]
        self.offsets = np.concatenate([[0], np.cumsum(counts[:, 1])])
        shape = (int(self.offsets[-1]), int(header["dim"]))
        self.row_bytes = shape[1] * 2
        # (mmap cannot map an empty region: a segment of empty shards has no rows to read.)
        self.rows: np.ndarray = np.zeros(shape, np.float16)
        self._mapped: mmap.mmap | None = None
        if shape[0]:
            with open(path, "rb") as handle:
                self._mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            # A query reads ~300 scattered rows: read from disk, each should fetch its own
            # pages, not the kernel's read-ahead window around them.
            self._mapped.madvise(mmap.MADV_RANDOM)
            # A plain array over the map: np.memmap's indexing costs ~25 us a call more.
            self.rows = np.frombuffer(self._mapped, np.float16, shape[0] * shape[1], start).reshape(shape)

    def places(self, ids: np.ndarray) -> np.ndarray:
        """Give the rows' places in this file of index `ids` (every one in this segment)."""
        shards, rows = split_ids(ids)
        return self.offsets[np.searchsorted(self.ordinals, shards)] + rows

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Give the float16 rows of index `ids` (every one in this segment), in their order."""
        return self.rows[self.places(ids)]

    def populate(self) -> None:
        """Read the rows into the page cache and map every page of them into this process (a
        page first touched costs a fault even when cached: ~13 us here, 300 a query), in
        POPULATE_CHUNK pieces through ctypes so that the GIL is free meanwhile. Where the kernel
        cannot (MADV_POPULATE_READ is Linux 5.14+), the file is read: cached, faulted on use."""
        if self._mapped is None:
            return
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        base = self.rows.ctypes.data - self.start  # the map's first byte (offset 0, page-aligned)
        length = len(self._mapped)
        for first in range(0, length, POPULATE_CHUNK):
            if libc.madvise(base + first, min(POPULATE_CHUNK, length - first), MADV_POPULATE_READ):
                with open(self.path, "rb") as handle:
                    handle.seek(first)
                    while handle.read(POPULATE_CHUNK):
                        pass
                return

    def will_need_places(self, places: np.ndarray) -> None:
        """Ask the kernel to read the pages of the rows at `places` now, without waiting for them."""
        if self._mapped is None:
            return
        for page in np.unique((self.start + places * self.row_bytes) // mmap.PAGESIZE):
            self._mapped.madvise(mmap.MADV_WILLNEED, int(page) * mmap.PAGESIZE, 2 * mmap.PAGESIZE)

    def scores(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Give the query's inner product with the rows of index `ids` (every one in this segment)."""
        return float16_inner_products(self.gather(ids), query) + self.centre @ query


def float16_inner_products(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Give each float16 row's inner product with `query` (float32), by faiss's float16
    kernel: ~50 us for 300 rows of 512, against ~250 for numpy's cast then product."""
    import faiss

    scores = np.empty(len(rows), dtype=np.float32)
    if not len(rows):
        return scores
    flat = faiss.IndexScalarQuantizer(
        rows.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    flat.add_sa_codes(np.ascontiguousarray(rows).view(np.uint8))
    found, places = flat.search(np.ascontiguousarray(query[None, :], dtype=np.float32), len(rows))
    scores[places[0]] = found[0]
    return scores


class SegmentedIndex:
    """The segments of one index, searched as one. Their codes are merged at load into the
    trained index (faiss holds fast-scan codes in memory anyway, and one index scans a query's
    lists in one call, not one per segment: 9 segments of 1M items took 1.0 ms a query, merged
    0.34 ms); the rows stay memory-mapped per segment."""

    def __init__(
        self,
        trained: str | Path,
        segments: Sequence[str | Path],
        rows: Sequence[str | Path],
        nprobe: int,
        rescored: int = 0,
        threads: int = SEARCH_THREADS,
    ):
        import faiss

        if len(rows) != len(segments):
            raise ValueError(f"{len(segments)} segments and {len(rows)} rows files")
        # One OpenMP thread a search: a server's concurrency is its requests', and this
        # index's own threads (one query's probes side by side); more would contend.
        faiss.omp_set_num_threads(1)
        self._trained = faiss.read_index(str(trained))
        self.codes = faiss.downcast_index(faiss.extract_index_ivf(self._trained))
        if self.codes.ntotal:
            raise ValueError(f"{trained}: a trained index holds no rows, this one {self.codes.ntotal}")
        self.factory = factory_of(self.codes)
        self.quantizer = faiss.downcast_index(self.codes.quantizer)
        self.lists = self.codes.nlist
        self.nprobe = min(nprobe, self.lists)
        self.rescored = rescored
        for path in segments:
            merge_segment(self.codes, path)
        self.rows = [SegmentRows(path) for path in rows]
        if any(not np.array_equal(r.centre, self.rows[0].centre) for r in self.rows):
            raise ValueError(f"{trained}: its segments' rows files were written for other trainings")
        # By shard ordinal: the rows file holding its rows, and where they start there.
        ordinals = np.concatenate([r.ordinals for r in self.rows]) if self.rows else np.zeros(0, np.int64)
        self._rows_of = np.full(int(ordinals.max(initial=-1)) + 1, -1, dtype=np.int64)
        self._first_row = np.zeros(len(self._rows_of), dtype=np.int64)
        for number, segment_rows in enumerate(self.rows):
            self._rows_of[segment_rows.ordinals] = number
            self._first_row[segment_rows.ordinals] = segment_rows.offsets[:-1]
        self.items = self.codes.ntotal
        # One query's probes are split between threads (interleaved, so that each has near and
        # far lists) when it scans enough codes for the hand-off to pay.
        self.threads = threads
        self._pool = (
            ThreadPoolExecutor(threads - 1, initializer=faiss.omp_set_num_threads, initargs=(1,))
            if threads > 1
            else None
        )
        # Searches under way: while another runs (a server's concurrent requests), a search
        # scans on its own thread, as the cores are busy already.
        self._running = 0
        self._running_lock = threading.Lock()
        prefetching = prefetch_rows(self.rows, PREFETCH_SHARE)
        self.prefetching = prefetching is not None
        self.rows_resident = prefetching or threading.Event()  # (never set: not read ahead)

    def search(self, queries: np.ndarray, n: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Give each query's best `n` (scores, ids), best first, ties by id; -1 ids pad a short
        row. The best max(n, rescored) by the codes are scored again from the rows."""
        import faiss

        # faiss's OpenMP threads are set per calling thread (a server's request threads too):
        # one, so that concurrent searches do not each start a team on the same cores.
        faiss.omp_set_num_threads(1)
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        nprobe = min(nprobe or self.nprobe, self.lists)
        # The HNSW graph's breadth when finding the nearest centroids: as many as are probed
        # (twice as many found 0.99 of the nearest 128 of 16,384 centroids, not 0.97, for no
        # measurable recall@10 and 0.3 ms more a query; bench/README.md).
        params = (
            faiss.SearchParametersHNSW(efSearch=max(COARSE_BREADTH, round(HNSW_BREADTH * nprobe)))
            if hasattr(self.quantizer, "hnsw")
            else None
        )
        centroid_scores, lists = self.quantizer.search(queries, nprobe, params=params)
        wanted = max(n, self.rescored)

        def scan(part: int, parts: int = 1) -> tuple[np.ndarray, np.ndarray]:
            mine, scores_of_mine = lists[:, part::parts], centroid_scores[:, part::parts]
            return _preassigned(self.codes, queries, wanted, mine, scores_of_mine, mine.shape[1])

        with self._running_lock:
            self._running += 1
            alone = self._running == 1
        try:
            scanned = len(queries) * self.items * nprobe / self.lists
            parts = min(self.threads, nprobe) if alone and scanned >= PARALLEL_CODES else 1
            if self._pool is not None and parts > 1:
                others = [self._pool.submit(scan, part, parts) for part in range(1, parts)]
                found = [scan(0, parts)] + [other.result() for other in others]
            else:
                found = [scan(0)]
        finally:
            with self._running_lock:
                self._running -= 1
        scores = np.concatenate([part_scores for part_scores, _ in found], axis=1)
        ids = np.concatenate([part_ids for _, part_ids in found], axis=1)
        best_scores = np.full((len(queries), n), -np.inf, dtype=np.float32)
        best_ids = np.full((len(queries), n), -1, dtype=np.int64)
        for number, (query, row_scores, row_ids) in enumerate(zip(queries, scores, ids, strict=True)):
            held = np.flatnonzero(row_ids >= 0)
            if len(held) > wanted:
                held = best_by_score_then_id(held, row_scores[held], row_ids[held], wanted)
            kept_ids = row_ids[held]
            kept = self._rescore(query, kept_ids) if self.rescored else row_scores[held]
            order = np.lexsort((kept_ids, -kept))[:n]  # best first, then by id
            best_scores[number, : len(order)], best_ids[number, : len(order)] = kept[order], kept_ids[order]
        return best_scores, best_ids

    def _rescore(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Give the query's exact scores of `ids`, each from the rows of its segment."""
        if not len(ids):
            return np.zeros(0, dtype=np.float32)
        shards, in_shard = split_ids(ids)
        files, places = self._rows_of[shards], self._first_row[shards] + in_shard
        numbers = np.unique(files)
        if not self.rows_resident.is_set():
            # Rows not yet in memory: ask for every candidate's page at once, so that the disk
            # reads them side by side rather than one fault after another.
            for number in numbers:
                self.rows[number].will_need_places(places[files == number])
        rows = np.empty((len(ids), self.rows[0].rows.shape[1]), dtype=np.float16)
        for number in numbers:
            mine = files == number
            rows[mine] = self.rows[number].rows[places[mine]]
        return float16_inner_products(rows, query) + self.rows[0].centre @ query


def merge_segment(index: Any, path: str | Path) -> None:
    """Move a segment file's codes into `index` (the trained index they were built from)."""
    import faiss

    whole = faiss.read_index(str(path))
    segment = faiss.downcast_index(faiss.extract_index_ivf(whole))
    if not segment.quantizer.ntotal:  # its file holds a stand-in: it searches with the trained one
        segment.own_fields = False
        segment.quantizer = index.quantizer
    try:
        index.merge_from(segment, 0)
    except RuntimeError as error:
        raise ValueError(
            f"{path}: built from another training than the index's trained file ({error})"
        ) from None
    del segment, whole  # its lists, now empty, and its own quantizer (a stand-in's few bytes stay)


def best_by_score_then_id(places: np.ndarray, scores: np.ndarray, ids: np.ndarray, count: int) -> np.ndarray:
    """Give the `count` places of the best scores, ties at the cut by id: the codes' best of all
    segments, the same however the rows are split into segments (4-bit codes tie often)."""
    negated = -scores
    cut = np.partition(negated, count - 1)[count - 1]
    sure = places[negated < cut]
    tied = np.flatnonzero(negated == cut)
    tied = places[tied[np.argsort(ids[tied], kind="stable")[: count - len(sure)]]]
    return np.concatenate([sure, tied])


def prefetch_rows(rows: Sequence[SegmentRows], share_of_memory: float) -> threading.Event | None:
    """Read the rows files into the page cache and map them (`SegmentRows.populate`) in the
    background when they fit in `share_of_memory` of the memory available; give the event set
    once they are, or None where they do not fit (re-scoring then reads each query's rows as
    it comes)."""
    if sum(r.path.stat().st_size for r in rows) > share_of_memory * available_memory():
        return None
    done = threading.Event()

    def read_ahead() -> None:
        for segment_rows in rows:
            segment_rows.populate()
        done.set()

    threading.Thread(target=read_ahead, name="index-rows-prefetch", daemon=True).start()
    return done


def available_memory() -> int:
    """Give the bytes of memory available (MemAvailable), or 0 where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _preassigned(
    segment: Any, queries: np.ndarray, k: int, lists: np.ndarray, centroid_scores: np.ndarray, nprobe: int
) -> tuple[np.ndarray, np.ndarray]:
    """One segment's best `k` of the lists already chosen, with this search's nprobe (given to
    faiss per call: concurrent searches may differ in it)."""
    import faiss

    count = len(queries)
    scores = np.empty((count, k), dtype=np.float32)
    ids = np.empty((count, k), dtype=np.int64)
    lists = np.ascontiguousarray(lists, dtype=np.int64)
    centroid_scores = np.ascontiguousarray(centroid_scores, dtype=np.float32)
    segment.search_preassigned_c(
        count,
        faiss.swig_ptr(queries),
        k,
        faiss.swig_ptr(lists),
        faiss.swig_ptr(centroid_scores),
        faiss.swig_ptr(scores),
        faiss.swig_ptr(ids),
        False,
        faiss.SearchParametersIVF(nprobe=nprobe),
    )
    return scores, ids


def exact_top(queries: np.ndarray, shards: Iterable[tuple[int, str | Path]], k: int) -> np.ndarray:
    """Give each query's exact top-`k` index ids (float32 inner products, ties by id), one
    shard in memory at a time."""
    return exact_top_scored(queries, shards, k)[1]


def exact_top_scored(
    queries: np.ndarray, shards: Iterable[tuple[int, str | Path]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Give each query's exact top-`k` (scores, index ids), as `exact_top`."""
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
    return best_scores, best_ids


def latencies(
    index: SegmentedIndex, queries: np.ndarray, n: int, nprobe: int | None = None
) -> tuple[float, float]:
    """Give the p50 and p99 of one query's search, in milliseconds, one query at a time."""
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query[None, :], n, nprobe)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def gallery_queries(gallery_shards: Sequence[tuple[int, str | Path]], count: int, seed: int) -> np.ndarray:
    """Give `count` gallery items drawn evenly from the first shards ("more like this" queries)."""
    rng = np.random.default_rng(seed)
    per_shard = max(1, math.ceil(count / max(1, len(gallery_shards))))
    picked = []
    for _, path in gallery_shards:
        vectors = read_features(path).embeddings
        picked.append(vectors[rng.choice(len(vectors), min(per_shard, len(vectors)), replace=False)])
        if sum(len(p) for p in picked) >= count:
            break
    return np.concatenate(picked)[:count]


def task_queries(query_shards: Sequence[str | Path], count: int) -> np.ndarray:
    """Give a task's first `count` queries (of its first shards): real queries of the other kind."""
    return np.concatenate([read_features(path).embeddings for path in query_shards[:4]])[:count]


def measured_recall(
    index: SegmentedIndex,
    sample: np.ndarray,
    gallery_shards: Sequence[tuple[int, str | Path]],
    candidates: int,
    nprobe: int,
) -> dict:
    """Give recall@10 of the index's top 10 and of the exact top 10 among its `candidates`
    against exact search, and one query's p50 / p99, with `nprobe`."""
    exact = exact_top(sample, gallery_shards, 10)
    _, found = index.search(sample, max(10, candidates), nprobe)
    p50, p99 = latencies(index, sample[:100], max(10, candidates), nprobe)
    return {
        "queries": len(sample),
        "nprobe": min(nprobe, index.lists),
        "recall@10": round(neighbour_recall(found[:, :10], exact), 4),
        "candidates_recall@10": round(neighbour_recall(found, exact), 4),
        "search_ms": {"p50": round(p50, 3), "p99": round(p99, 3)},
    }


def describe(
    trained: str | Path,
    segments: Sequence[str | Path],
    rows: Sequence[str | Path],
    gallery_shards: Sequence[tuple[int, str | Path]],
    query_shards: Sequence[str | Path],
    options: IndexOptions,
    run: Path,
    queries: int = 200,
    sample_seed: int = 0,
) -> dict:
    """Give the index's description as the server reads it, with what was measured: recall@10
    against exact search of the index's own top 10 and of the exact top 10 among its
    `candidates`, and the p50 / p99 of one query's search, on `queries` gallery items (queries
    of the gallery's kind) and, where `query_shards` are given, on as many of a task's queries
    (of the other kind: a caption against photos), each kind with its own nprobe."""
    index = SegmentedIndex(trained, segments, rows, options.nprobe, options.rescored)
    # The settings' nprobes, for this index's lists: what the server scans, as measured here.
    index.nprobe = probes(options.nprobe, index.lists)
    cross_modal_nprobe = probes(options.cross_modal_nprobe, index.lists)
    trained_on = int(Path(trained).stem.removeprefix("trained-"))
    fit = centroid_fit(index, gallery_shards, trained_on, sample_seed)
    own = measured_recall(
        index,
        gallery_queries(gallery_shards, queries, sample_seed),
        gallery_shards,
        options.candidates,
        index.nprobe,
    )
    cross = None
    if query_shards:
        cross = measured_recall(
            index,
            task_queries(query_shards, queries),
            gallery_shards,
            options.candidates,
            cross_modal_nprobe,
        )
        cross["source"] = "the task's queries"
    trained_fit, since_fit = fit["trained"], fit["since"]
    drift = trained_fit - since_fit if trained_fit is not None and since_fit is not None else 0.0
    return {
        "factory": index.factory,
        "lists": index.lists,
        "nprobe": index.nprobe,
        "cross_modal_nprobe": cross_modal_nprobe,
        "candidates": options.candidates,
        "rescored": options.rescored,
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
        "rows": [_relative(r, run) for r in rows],
        "shards_indexed": [[number, _relative(path, run)] for number, path in gallery_shards],
        "recall_queries": own["queries"],
        "recall_query_source": "gallery items",
        "recall@10": own["recall@10"],
        "candidates_recall@10": own["candidates_recall@10"],
        "search_ms": own["search_ms"],
        "cross_modal": cross,
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
