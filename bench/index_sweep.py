"""Fast-scan codes re-scored exactly against the index's SQ8 codes, on image-like and
text-like queries: the sweep that chooses the next index's numbers.

    python -m bench.index_sweep --items 1000000 [--queries 200] [--threads 1]

A synthetic gallery (`bench.synthetic.Mixture.spectral`, clusters of Zipf sizes) is held in
memory. Two query sets: *image-like* ones drawn from the gallery's own mixture ("more like
this"), and *text-like* ones shifted as a caption's embedding is from the images it
describes: a common offset plus spread, so that a query's cosine to its nearest items is
~0.3 (CLIP ViT-B/16 on COCO: 0.30 ± 0.02 to a caption's 100 nearest images). Recall@10 is
against exact search of the same float32 rows; p50 is one query at a time, after warm-up.

Rows: the index of today's runs (IVF lists found through HNSW, 8-bit scalar codes, scored
by the codes), and IVF with 4-bit fast-scan PQ codes (faiss `PQ<m>x4fs`) whose best
`rescored` candidates are re-scored exactly from float16 rows (what would be memory-mapped
on disk), per nprobe. The baseline runs in the same invocation.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.synthetic import Mixture

CHUNK = 65536


def gallery(items: int, dim: int, seed: int) -> tuple[Mixture, np.ndarray]:
    mixture = Mixture.spectral(max(16, items // 100), dim, seed=seed)
    rows = np.empty((items, dim), dtype=np.float32)
    for start in range(0, items, CHUNK):
        stop = min(items, start + CHUNK)
        rows[start:stop] = mixture.draw(stop - start, seed + 1 + start // CHUNK)
    return mixture, rows


def exact_top(rows: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Give each query's exact top-`k` (ids, scores) over `rows`, one chunk at a time."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(rows), CHUNK):
        scores = queries @ rows[start : start + CHUNK].T
        ids = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        scores, ids = np.concatenate([best, scores], 1), np.concatenate([best_ids, ids], 1)
        order = np.lexsort((ids, -scores), axis=1)[:, :k]
        best, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    return best_ids, best


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(e[:10])) / 10 for f, e in zip(found, exact, strict=True)]))


def build(factory: str, rows: np.ndarray, lists: int, threads: int):
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.index_factory(rows.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    sample = rows[np.random.default_rng(0).choice(len(rows), min(len(rows), lists * 40), replace=False)]
    started = time.perf_counter()
    index.train(sample)
    trained = time.perf_counter() - started
    for start in range(0, len(rows), CHUNK):
        index.add(rows[start : start + CHUNK])
    return index, trained, time.perf_counter() - started - trained


def searcher(index, nprobe: int, rescored: int, halves: np.ndarray | None):
    """Give one query's search: the index's best 10, or its best `rescored` re-scored from
    the float16 rows `halves`."""
    import faiss

    faiss.extract_index_ivf(index).nprobe = nprobe
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    if hasattr(quantizer, "hnsw"):
        quantizer.hnsw.efSearch = max(64, 2 * nprobe)

    def one(query: np.ndarray) -> np.ndarray:
        if halves is None:
            return index.search(query[None, :], 10)[1][0]
        _, ids = index.search(query[None, :], rescored)
        ids = np.sort(ids[0][ids[0] >= 0])
        exact = halves[ids].astype(np.float32) @ query
        order = np.lexsort((ids, -exact))[:10]
        return ids[order]

    return one


def measure(one, queries: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    for query in queries[:10]:
        one(query)
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        found.append(one(query))
        times.append((time.perf_counter() - started) * 1000)
    return recall(np.array([np.pad(f, (0, 10 - len(f)), constant_values=-1) for f in found]), exact), float(
        np.median(times)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="threads a query searches with")
    parser.add_argument("--lists", type=int, default=4096)
    parser.add_argument(
        "--text-cosine", type=float, default=0.30, help="text-like queries' cosine to their 100 nearest"
    )
    parser.add_argument("--pq", type=int, action="append", help="PQ sub-quantizers (default 128, 256)")
    parser.add_argument("--nprobe", type=int, action="append", help="lists a query scans (default 16-128)")
    args = parser.parse_args()
    import faiss

    build_threads = os.cpu_count() or 1
    mixture, rows = gallery(args.items, 512, seed=0)
    texts, cosine = mixture.calibrated_text_like(
        args.queries, 10**6 + 1, args.text_cosine, lambda probe: exact_top(rows, probe, 100)[1]
    )
    print(f"text-like: {cosine:.3f} of each query is its own item's direction", flush=True)
    kinds = {"image-like": mixture.draw(args.queries, seed=10**6), "text-like": texts}
    exact = {}
    for kind, queries in kinds.items():
        exact[kind], scores = exact_top(rows, queries, 100)
        print(
            f"{kind}: cosine to the 100 nearest {scores.mean():.3f} ± {scores.mean(axis=1).std():.3f}, "
            f"to the nearest {scores[:, 0].mean():.3f}",
            flush=True,
        )
    halves = rows.astype(np.float16)
    table = []
    configs = [(f"IVF{args.lists}_HNSW32,SQ8", None)]
    configs += [(f"IVF{args.lists}_HNSW32,PQ{m}x4fs", m) for m in args.pq or [128, 256]]
    for factory, pq in configs:
        index, trained_s, added_s = build(factory, rows, args.lists, build_threads)
        code_bytes = args.items * (pq // 2 if pq else 512)
        print(f"{factory}: trained in {trained_s:.0f} s, added in {added_s:.0f} s", flush=True)
        faiss.omp_set_num_threads(args.threads)
        for nprobe in args.nprobe or [16, 32, 64, 128]:
            for rescored in [None] if pq is None else [100, 300, 1000]:
                one = searcher(index, nprobe, rescored or 10, None if pq is None else halves)
                row = {"index": factory, "nprobe": nprobe, "rescored": rescored or "—"}
                row["codes_mb"] = code_bytes / 2**20
                for kind, queries in kinds.items():
                    row[kind] = measure(one, queries, exact[kind])
                table.append(row)
                print(row, flush=True)
        del index
    print(
        f"\n{args.items:,} items × 512, {args.queries} queries a kind, "
        f"{args.threads} thread(s) a query, faiss {faiss.__version__}\n"
    )
    header = ("index", "nprobe", "re-scored", "codes MB", "image recall@10", "image p50 ms")
    header += ("text recall@10", "text p50 ms")
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * (len(header) - 1))
    for row in table:
        image, text = row["image-like"], row["text-like"]
        print(
            f"| {row['index']} | {row['nprobe']} | {row['rescored']} | {row['codes_mb']:.0f} | "
            f"{image[0]:.3f} | {image[1]:.2f} | {text[0]:.3f} | {text[1]:.2f} |"
        )


if __name__ == "__main__":
    main()
