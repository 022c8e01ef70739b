"""Index benchmark: the approximate index (tuwen.ranking.index) against exact search and against usearch's
HNSW, on normalised 512-d galleries with the structure of real embeddings (bench.synthetic),
written as feature shards of a gallery-only run and never held whole in memory.

For each size, in one invocation:
- build: training (first shards, as the index stage trains), every segment, the index's size on
  disk and the peak RSS of the process that built it;
- +1%: new shards added (the segments the plan then adds, as the stage would build them) against
  the rebuild of everything (training included), measured in this run;
- recall@10 against exact search of the same shards, on two kinds of query: image-like ones
  drawn from the mixture ("more like this"), and text-like ones shifted from it as captions
  are from photos (`Mixture.calibrated_text_like`: cosine ~0.30 to their 100 nearest,
  calibrated on the first 1M items), searched as text queries (index.cross_modal_nprobe);
- the served index: the server's LoadedRun (`tuwen serve`'s search of one query) in its own
  process, cold (the first 100 queries after loading), then 1 and 8 threads, p50 / p99, its
  peak RSS, and its memory at the end: its own, the codes and ids, and the float16 rows'
  pages apart; then `python -m tuwen serve` itself over HTTP with text queries (a
  random-initialised tuwen-tiny-512 encodes each query), 1 and 8 clients;
- baselines: exact search held in memory (numpy, one query), where the gallery fits in 4 GB,
  usearch HNSW (float16, 2 threads) where asked (--usearch), and Milvus Lite (--milvus): the
  export's time, then the server's search through it.

Usage: python -m bench.index --items N [--shard-size 16384] [--workdir runs/bench-index]
    [--usearch] [--milvus] [--no-http] [--report FILE]
The last line printed is `recall@10 R p50 P ms text_recall@10 T` of the served index
(in-process, one thread; R and P for image-like queries, T for text-like ones).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import statistics
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from bench.synthetic import Mixture, write_gallery
from tuwen.ranking import index as ann
from tuwen.ranking.recall import neighbour_recall
from tuwen.run import layout
from tuwen.run.declaration import BASE, IMAGES, TEXTS, Collection, Model, Run
from tuwen.run.schema import schema_default

GALLERY = "archive"
MODEL = "tuwen-tiny-512"  # a small CN-CLIP embedding in 512 dimensions, as ViT-B-16 does
QUERIES = 200
TEXT_COSINE = 0.30  # text-like queries' mean cosine to their 100 nearest (CLIP ViT-B/16, COCO)
CALIBRATION_ITEMS = 1_000_000  # the text-like queries are calibrated on the first this many
CLUSTERS_PER_ITEM = 1 / 250  # a mixture of items / 250 clusters: ~250 near neighbours each


def peak_rss_mb(pid: int | str = "self") -> float:
    """Give a process's peak RSS (VmHWM; unlike ru_maxrss, a spawned child's own, not its parent's)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


def rss_parts_mb() -> dict[str, float]:
    """Give this process's resident memory now: its own (anonymous), mapped files' pages, and
    of those the index's float16 rows (`.rows` files: read only for re-scored candidates)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    parts = {key: int(status[key].split()[0]) / 1024 for key in ("RssAnon", "RssFile")}
    parts["rows_mapped"] = mapped_kb(lambda mapping: mapping.endswith(".rows")) / 1024
    return parts


def mapped_kb(of_interest) -> int:
    """Give the kB this process has resident of the files `of_interest(path)` picks (the Rss of
    their mappings in /proc/self/smaps)."""
    total, mapping = 0, ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's first line
            mapping = fields[-1] if len(fields) >= 6 else ""
        elif fields and fields[0] == "Rss:" and of_interest(mapping):
            total += int(fields[1])
    return total


def in_child(function, *args):
    """Run `function(*args)` in a fresh process; give its result and the process's peak RSS (MB)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_with_rss, (function, *args))


def _with_rss(function, *args):
    return function(*args), peak_rss_mb()


# ---- the run ----------------------------------------------------------------------------


def model_card(workdir: Path) -> dict:
    """A random-initialised small CN-CLIP (512-d), saved once: the model a served query is encoded by."""
    from tuwen.clip.architectures import architecture
    from tuwen.clip.cards import ModelCard, weights_tag
    from tuwen.clip.models import build_model, checkpoint_digest, save_checkpoint

    arch = architecture(MODEL)
    checkpoint = workdir / "model" / "checkpoint.pt"
    if not checkpoint.exists():
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(build_model(arch, seed=0), checkpoint, arch)
    digest = checkpoint_digest(checkpoint, arch)
    return ModelCard(weights_tag(MODEL, digest), MODEL, str(checkpoint.resolve()), digest).as_dict()


def make_run(
    run: Path, items: int, added: int, shard_size: int, card: dict, mixture: Mixture
) -> tuple[list[tuple[int, Path]], list[tuple[int, Path]]]:
    """Write a gallery-only run of `items` synthetic items in shards, and `added` more in one
    shard after them (what a user's next photos make); give the shards without and with it.
    What the server reads of a finished run is declared; the shards are kept between invocations."""
    folder = run / layout.features_folder(card["tag"], GALLERY)
    base = math.ceil(items / shard_size)
    marker = folder / f"written-{items}-{added}-{shard_size}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_gallery(mixture, folder, items, shard_size, card["tag"])
        write_gallery(mixture, folder, added, shard_size, card["tag"], first_shard=base)
        marker.touch()
    from tuwen.data.shards import shard_number

    shards = [(shard_number(path.name), path) for path in sorted(folder.glob("*.parquet"))]
    write_declaration(run, card, [path for _, path in shards], shard_size)
    return shards[:base], shards


def declared_run(run: Path) -> Run:
    """The run the synthetic gallery is: one collection, one model, an index."""
    return Run(
        str(run), False, {GALLERY: Collection(GALLERY, IMAGES, "synthetic")}, {}, (Model(MODEL),), index=True
    )


def write_declaration(run: Path, card: dict, shards: list[Path], shard_size: int) -> None:
    settings = run / layout.settings("run")
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"run": declared_run(run).to_dict()}), encoding="utf-8")
    ingest = {"ingest": {"max_image_pixels": schema_default("ingest.max_image_pixels")}}
    (run / layout.settings("ingest")).write_text(json.dumps(ingest), encoding="utf-8")
    index = {"index": schema_default("index")}
    (run / layout.settings("index_search")).write_text(json.dumps(index), encoding="utf-8")
    card_path = run / layout.model_card(MODEL, BASE)
    card_path.parent.mkdir(parents=True, exist_ok=True)
    card_path.write_text(json.dumps(card), encoding="utf-8")
    towers = run / layout.model_towers(MODEL, BASE)
    if not towers.exists():  # the query encoder the server runs, exported as a run exports it
        from tuwen.clip.cards import ModelCard
        from tuwen.clip.models import load_model
        from tuwen.clip.onnx_towers import export_model_towers

        described = ModelCard.read(card_path)
        export_model_towers(load_model(described.arch, described.checkpoint), described, towers.parent)
    import pyarrow.parquet as pq

    ids, numbers = [], []
    for path in shards:
        column = pq.read_table(path, columns=["id"]).column("id").to_pylist()
        ids += column
        numbers += [path.stem] * len(column)
    assignment = run / layout.assignment(GALLERY)
    assignment.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "digest": ids, "shard": numbers}).to_parquet(assignment, index=False)
    # The items' manifest: synthetic vectors have no image file to show.
    manifest = run / layout.manifest(GALLERY, IMAGES)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"image_id": ids, "path": "", "digest": ids, "status": "ok"}).to_parquet(
        manifest, index=False
    )


# ---- building -----------------------------------------------------------------------------


def build(
    run: Path, tag: str, shards: list[tuple[int, Path]], options: ann.IndexOptions, threads: int
) -> dict:
    """Train on the first shards and build every segment, as the index stage's jobs do."""
    trained_count = ann.trained_shards(len(shards), options.retrain_growth)
    trained = run / layout.index_trained(GALLERY, tag, str(trained_count))
    started = time.perf_counter()
    if not trained.exists():
        first = [p for _, p in shards[:trained_count]]
        sample, lists = ann.training_sample(first, options.lists, 0, options.retrain_growth)
        ann.write_index(ann.train(sample, lists, options.codes, threads), trained)
    train_s = time.perf_counter() - started
    segments, rows, built = [], [], []
    started = time.perf_counter()
    for start, count in ann.segment_plan(len(shards), options.segment_base):
        where = (GALLERY, tag, str(trained_count), str(start), str(count))
        path, rows_path = run / layout.index_segment(*where), run / layout.index_segment_rows(*where)
        if not path.exists():
            segment = ann.build_segment(trained, shards[start : start + count], threads)
            ann.write_segment(segment, path)
            ann.write_rows(shards[start : start + count], rows_path, ann.rows_centre(segment))
            built.append(path)
        segments.append(path)
        rows.append(rows_path)
    return {
        "trained": str(trained),
        "segments": [str(s) for s in segments],
        "rows": [str(r) for r in rows],
        "built": len(built),
        "train_s": train_s,
        "segments_s": time.perf_counter() - started,
        "bytes": trained.stat().st_size + sum(s.stat().st_size for s in segments),
        "rows_bytes": sum(r.stat().st_size for r in rows),
    }


def describe(run: Path, built: dict, shards, options: ann.IndexOptions, tag: str) -> dict:
    """Write the index's description (as describe_index does), with its measured recall."""
    measured = ann.describe(built["trained"], built["segments"], built["rows"], shards, [], options, run)
    description = {"collection": GALLERY, "items": measured["items"], "index": measured, "model_tag": tag}
    path = run / layout.served_index(GALLERY)
    path.write_text(json.dumps(description), encoding="utf-8")
    finish(run, shards)
    return measured


def finish(run: Path, shards: list[tuple[int, Path]]) -> None:
    """Record the synthetic run as finished (what the workflow's finish_run does), so that the
    server reads it: its files as the record names them."""
    from tuwen.finished.record import write_record
    from tuwen.run.plans import finished_plan

    class Shards:
        def features(self, collection, model, stage):
            return [str(path.relative_to(run)) for _, path in shards]

        def ocr(self, collection):
            return []

        def sentences(self, collection, encoder):
            return []

    write_record(run, finished_plan(declared_run(run), Shards()), run / layout.finished())


# ---- serving ------------------------------------------------------------------------------


def serve_in_process(
    run: Path,
    queries: dict[str, np.ndarray],
    exact: dict[str, np.ndarray],
    shard_size: int,
    milvus: str | None = None,
) -> dict:
    """The server's search of one query (LoadedRun.search, what `tuwen serve` runs per request,
    less HTTP and encoding): image-like queries cold (the first 100 after loading), then 1 and
    8 threads; text-like ones (searched as text queries) 1 thread; each kind's recall@10."""
    from tuwen.serve.loaded_run import LoadedRun, Query

    started = time.perf_counter()
    index = LoadedRun.open(run, milvus=milvus)
    load_s = time.perf_counter() - started
    channel = index.approximate[GALLERY].channel
    collection = index.collections[GALLERY]

    def one(kind: str):
        def search(vector):
            began = time.perf_counter()
            answer = index.search(Query(kind, "vector", {channel: vector}), GALLERY, 10)
            return time.perf_counter() - began, [h["id"] for h in answer["hits"]], answer["exact"]

        return search

    def wanted(top: np.ndarray) -> np.ndarray:
        # The exact top ids are (shard << 32 | row); bench.synthetic names item n of shard s's
        # rows `item-<s * shard size + n>`.
        shards, rows = ann.split_ids(top)
        names = [
            [collection.row(f"item-{s * shard_size + r:09d}") for s, r in zip(*pair, strict=True)]
            for pair in zip(shards, rows, strict=True)
        ]
        return np.asarray(names)

    def timed(answers) -> dict:
        times = sorted(a[0] for a in answers)
        return {
            "p50_ms": 1000 * statistics.median(times),
            "p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
        }

    results: dict = {"load_s": load_s}
    images, texts = queries["image"], queries["text"]
    # Cold: the first pass, the index's pages read from disk as queries touch them; then warm.
    cold = [one(IMAGES)(vector) for vector in images[:100]]
    results["cold_p50_ms"] = timed(cold)["p50_ms"]
    results["cold_rss_mb"] = rss_parts_mb()
    # Warm: once the server has read its rows files into the page cache (it starts at load,
    # in the background, where they fit: tuwen.ranking.index.PREFETCH_SHARE).
    searched = index.approximate[GALLERY]
    if hasattr(searched, "index"):
        if searched.index.prefetching:
            searched.index.rows_resident.wait(timeout=1800)
            results["rows_resident_s"] = time.perf_counter() - started
        results["lists"], results["search_threads"] = searched.index.lists, searched.index.threads
        results["nprobe"] = searched.description["nprobe"]  # (image-like; text-like: cross_modal_nprobe)
    for threads in (1, 8):
        with ThreadPoolExecutor(threads) as pool:
            began = time.perf_counter()
            answers = list(pool.map(one(IMAGES), images))
            wall = time.perf_counter() - began
        results[str(threads)] = {**timed(answers), "per_s": len(answers) / wall}
        found = [[collection.row(i) for i in a[1]] for a in answers]
        results["exact"] = any(a[2] for a in answers)
    results["recall@10"] = neighbour_recall(found, wanted(exact["image"]))
    answers = [one(TEXTS)(vector) for vector in texts]
    found = [[collection.row(i) for i in a[1]] for a in answers]
    results["text"] = {"1": timed(answers), "recall@10": neighbour_recall(found, wanted(exact["text"]))}
    results["rss_now_mb"] = rss_parts_mb()
    return results


def nprobe_sweep(
    run: Path, queries: dict[str, np.ndarray], exact: dict[str, np.ndarray], nprobes
) -> list[dict]:
    """The served index (SegmentedIndex, as the server loads it) at each nprobe: recall@10 of each
    kind of query against exact search, and one query's p50 / p99 on one thread and split
    between two (the server's search when it is alone)."""
    described = json.loads((run / layout.served_index(GALLERY)).read_text())["index"]
    trained = run / described["trained"]
    segments = [run / s for s in described["segments"]]
    rows = [run / r for r in described["rows"]]
    found = []
    for threads in (1, 2):
        index = ann.SegmentedIndex(
            trained, segments, rows, described["nprobe"], described["rescored"], threads
        )
        if index.prefetching:
            index.rows_resident.wait(timeout=1800)
        ann.PARALLEL_CODES = 0  # (this process's: two threads split every query's lists)
        # Each nprobe with the coarse search's breadth (HNSW efSearch) as the index sets it; on
        # two threads the largest nprobe again with the breadth before (twice the lists probed).
        settings = [(nprobe, ann.HNSW_BREADTH) for nprobe in nprobes]
        if threads == 2 and hasattr(index.quantizer, "hnsw"):
            settings.append((max(nprobes), 2.0))
        default_breadth = ann.HNSW_BREADTH
        for nprobe, ann.HNSW_BREADTH in settings:
            row = {"nprobe": nprobe, "threads": threads, "lists": index.lists}
            row["ef_per_list"] = ann.HNSW_BREADTH
            for kind in ("image", "text"):
                # Timed first, out of the CPU's caches (a first pass, as the served rows are):
                # the recall pass would leave the same queries' codes and rows cached.
                evict_caches()
                p50, p99 = ann.latencies(index, queries[kind][:100], 10, nprobe)
                _, ids = index.search(queries[kind], 10, nprobe)
                row[kind] = {"recall@10": neighbour_recall(ids, exact[kind]), "p50_ms": p50, "p99_ms": p99}
            found.append(row)
            print(json.dumps(row), flush=True)
        ann.HNSW_BREADTH = default_breadth
        del index
    return found


def evict_caches(size: int = 256 * 2**20) -> None:
    """Read and write a buffer larger than the CPU's caches (and their TLBs' reach)."""
    buffer = np.ones(size // 8)
    buffer += 1.0


def serve_http(run: Path, clients: tuple[int, ...] = (1, 8)) -> dict:
    """`python -m tuwen serve` over the run: text queries over HTTP, its peak RSS."""
    from bench.serve import measure
    from tests.test_serve import Server

    captions = [f"第{i}张照片：{'红橙黄绿青蓝紫'[i % 7]}色的{'猫狗鱼鸟山水花'[i % 7]}" for i in range(64)]
    server = Server(run, start_s=900)  # (10M items: a minute or two to load)
    try:
        path = "/api/search?" + "&".join(["gallery=" + GALLERY, "k=10"])
        requests = [("GET", f"{path}&q={urllib.parse.quote(c)}", None, {}) for c in captions]
        measure(server.port, requests[:4], 1, 4)  # the model loads on the first query
        results = {str(n): measure(server.port, requests, n, 32) for n in clients}
        results["peak_rss_mb"] = peak_rss_mb(server.process.pid)
    finally:
        server.stop()
    return results


# ---- baselines ----------------------------------------------------------------------------


def exact_in_memory(shards, queries: np.ndarray) -> dict:
    """numpy's exact search of one query against the whole gallery held in memory (float32)."""
    from tuwen.files.parquet import read_features

    gallery = np.concatenate([read_features(p).embeddings for _, p in shards])
    times = []
    for query in queries[:50]:
        began = time.perf_counter()
        scores = gallery @ query
        np.argpartition(scores, -10)[-10:]
        times.append(time.perf_counter() - began)
    return {"p50_ms": 1000 * statistics.median(times)}


def usearch_hnsw(shards, queries: dict[str, np.ndarray], exact: dict[str, np.ndarray], threads: int) -> dict:
    """usearch's HNSW (inner product, float16 vectors, expansion_search 128), built from the shards
    one at a time. Its 8-bit vectors halve the memory but stopped at recall@10 0.80 to 0.82 on
    the 50,000-item mixture (expansion_search 64 to 256, 2026-12-02), below the goal."""
    from usearch.index import Index

    from tuwen.files.parquet import read_features

    index = Index(ndim=queries["image"].shape[1], metric="ip", dtype="f16", expansion_search=128)
    began = time.perf_counter()
    for number, path in shards:
        vectors = read_features(path).embeddings
        index.add(ann.row_ids(number, len(vectors)), vectors, threads=threads)
    build_s = time.perf_counter() - began
    measured = {"build_s": build_s, "bytes": index.memory_usage}
    for kind in ("image", "text"):
        times, found = [], []
        for query in queries[kind]:
            started = time.perf_counter()
            matches = index.search(query, 10)
            times.append(time.perf_counter() - started)
            found.append(np.asarray(matches.keys, dtype=np.int64))
        prefix = "" if kind == "image" else "text_"
        measured[prefix + "p50_ms"] = 1000 * statistics.median(times)
        measured[prefix + "recall@10"] = neighbour_recall(found, exact[kind])
    return measured


def milvus_lite(
    run: Path, queries: dict[str, np.ndarray], exact: dict[str, np.ndarray], shard_size: int
) -> dict:
    """`tuwen export milvus` into a Milvus Lite file, then the server's search through it."""
    from tuwen.export.milvus import export_milvus

    uri = str(run / "milvus.db")
    if Path(uri).is_dir():  # Milvus Lite's database is a folder of that name
        shutil.rmtree(uri)
    Path(uri).unlink(missing_ok=True)
    began = time.perf_counter()
    done = export_milvus(run, uri, index_type="AUTOINDEX")
    export_s = time.perf_counter() - began
    served = serve_in_process(run, queries, exact, shard_size, milvus=uri)
    return {"export_s": export_s, "rows": done[0]["held"], **served}


def contest_run(workdir: Path) -> list[dict]:
    """The 50,000-image run of `make bench-serve` (contest-shaped, built once with the workflow),
    indexed by the workflow's own index stage (index.min_items: 0): its recall on the run's
    5,000 real queries, and the server's search of them through it against exact search."""
    import subprocess

    import yaml

    from bench.scale import snakemake_command
    from bench.serve import build_large
    from tuwen.serve.loaded_run import LoadedRun

    run = build_large(workdir / "bench-serve", 50000, 5000, os.cpu_count() or 1).resolve()
    config = yaml.safe_load((workdir / "bench-serve" / "large-50000x5000.yaml").read_text())
    indexed = workdir / "bench-serve" / "large-indexed.yaml"
    indexed.write_text(yaml.safe_dump({**config, "index": {"min_items": 0}}))
    began = time.perf_counter()
    subprocess.run(snakemake_command(run, indexed, os.cpu_count() or 1), check=True, capture_output=True)
    stage_s = time.perf_counter() - began
    described = json.loads((run / layout.served_index("t2i_gallery")).read_text())["index"]
    served = LoadedRun.open(run)
    # The run's own queries, by their stored embeddings: the server's answers through the index
    # against the run's exact result table.
    collection = served.collections["t2i_queries"]
    channel = served.finished.rankings["t2i"].channel
    vectors = collection.embeddings[channel][:QUERIES]
    topk = pd.read_parquet(run / layout.topk("t2i")).sort_values(["query_id", "rank"])
    tops = topk.groupby("query_id")["target_id"].apply(lambda t: list(t)[:10])
    exact = [tops[query] for query in collection.ids[:QUERIES]]
    times, found = [], []
    for vector in vectors:
        began_one = time.perf_counter()
        found.append(served_ids(served, vector, channel))
        times.append(time.perf_counter() - began_one)
    recall = sum(len(set(f) & set(e)) for f, e in zip(found, exact, strict=True)) / (10 * len(exact))
    return [
        {
            "items": described["items"],
            "what": "contest-shaped run (bench-serve), workflow index stage, " + described["factory"],
            "stage_s": stage_s,
            # The stage's own measurement on its gallery items and on the task's real captions.
            "recall@10": described["recall@10"],
            "candidates_recall@10": described["candidates_recall@10"],
            "cross_modal": described["cross_modal"],
            "served": {"recall@10": recall, "1": {"p50_ms": 1000 * statistics.median(times)}},
        }
    ]


def served_ids(index, vector: np.ndarray, channel: str) -> list[str]:
    from tuwen.serve.loaded_run import Query

    answer = index.search(Query(TEXTS, "query", {channel: vector}), "t2i_gallery", 10)
    return [hit["id"] for hit in answer["hits"]]


# ---- the benchmark ------------------------------------------------------------------------


def query_sets(
    mixture: Mixture, shards: list[tuple[int, Path]], shard_size: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float, float, float]:
    """Give the image-like and text-like queries, each kind's exact top-10 ids over `shards`,
    the share of each text-like query that is its own item's direction (calibrated on the
    first CALIBRATION_ITEMS items), and each kind's mean cosine to its 100 nearest over
    every shard (text, then image)."""
    first = shards[: max(1, CALIBRATION_ITEMS // shard_size)]
    texts, share = mixture.calibrated_text_like(
        QUERIES, 10**6 + 1, TEXT_COSINE, lambda probe: ann.exact_top_scored(probe, first, 100)[0]
    )
    queries = {"image": mixture.draw(QUERIES, seed=424242), "text": texts}
    scores, ids = ann.exact_top_scored(np.concatenate([queries["image"], texts]), shards, 100)
    exact = {"image": ids[:QUERIES, :10], "text": ids[QUERIES:, :10]}
    return queries, exact, share, float(scores[QUERIES:].mean()), float(scores[:QUERIES].mean())


def bench(
    items: int,
    workdir: Path,
    shard_size: int,
    threads: int,
    usearch: bool,
    http: bool,
    milvus: bool,
    nprobes: tuple[int, ...] = (),
) -> list[dict]:
    card = model_card(workdir)
    tag = card["tag"]
    mixture = Mixture.spectral(clusters=max(16, int(items * CLUSTERS_PER_ITEM)), noise=0.04, seed=0)
    run = workdir.resolve() / f"items-{items}"
    began = time.perf_counter()
    shards, grown_shards = make_run(run, items, math.ceil(items / 100), shard_size, card, mixture)
    write_s = time.perf_counter() - began
    options = ann.IndexOptions.defaults()

    # A full build from nothing (training included), then +1%: new shards, the segments added.
    shutil.rmtree(run / layout.served_index(GALLERY).rsplit("/", 1)[0], ignore_errors=True)
    built, build_rss = in_child(build, run, tag, shards, options, threads)
    grown, grow_rss = in_child(build, run, tag, grown_shards, options, threads)
    measured = describe(run, grown, grown_shards, options, tag)
    # The served gallery is the grown one: exact top-10 of the queries over it.
    queries, exact, share, text_cosine, image_cosine = query_sets(mixture, grown_shards, shard_size)
    served, serve_rss = in_child(serve_in_process, run, queries, exact, shard_size)
    rows = [
        {
            "items": items,
            "added": math.ceil(items / 100),
            "what": f"faiss {measured['factory']} nprobe {measured['nprobe']} / "
            f"{measured['cross_modal_nprobe']} (text), {measured['rescored']} re-scored",
            "write_s": write_s,
            "build_s": built["train_s"] + built["segments_s"],
            "train_s": built["train_s"],
            "segments": len(built["segments"]),
            "build_rss_mb": build_rss,
            "add_1pct_s": grown["train_s"] + grown["segments_s"],
            "add_1pct_segments": grown["built"],
            "add_rss_mb": grow_rss,
            "bytes": grown["bytes"],
            "rows_bytes": grown["rows_bytes"],
            "recall@10": measured["recall@10"],
            "candidates_recall@10": measured["candidates_recall@10"],
            "index_p50_ms": measured["search_ms"]["p50"],
            "index_p99_ms": measured["search_ms"]["p99"],
            "served": served,
            "serve_rss_mb": serve_rss,
            "text_like": {"share": share, "cosine@100": text_cosine, "image_cosine@100": image_cosine},
        }
    ]
    if http:
        rows[0]["http"] = serve_http(run)
    if nprobes:
        rows[0]["nprobe_sweep"], _ = in_child(nprobe_sweep, run, queries, exact, nprobes)
    if items * queries["image"].shape[1] * 4 <= 4 * 2**30:
        rows.append(
            {
                "items": rows[0]["items"],
                "what": "exact, numpy, held in memory",
                **exact_in_memory(grown_shards, queries["image"]),
            }
        )
    if usearch:
        rows.append(
            {
                "items": rows[0]["items"],
                "what": "usearch HNSW f16",
                **usearch_hnsw(grown_shards, queries, exact, threads),
            }
        )
    if milvus:
        measured_milvus, milvus_rss = in_child(milvus_lite, run, queries, exact, shard_size)
        rows.append(
            {
                "items": rows[0]["items"],
                "what": "Milvus Lite (AUTOINDEX), through the server",
                **measured_milvus,
                "rss_mb": milvus_rss,
            }
        )
    rows[0]["mixture"] = mixture.source
    return rows


def serve_again(
    items: int, workdir: Path, shard_size: int, http: bool, nprobes: tuple[int, ...] = ()
) -> list[dict]:
    """The served index of an earlier run of this size, measured again (cold, then warm), and
    swept over `nprobes` where given."""
    from tuwen.data.shards import shard_number

    run = workdir.resolve() / f"items-{items}"
    description = json.loads((run / layout.served_index(GALLERY)).read_text())
    tag = description["model_tag"]
    folder = run / layout.features_folder(tag, GALLERY)
    shards = [(shard_number(path.name), path) for path in sorted(folder.glob("*.parquet"))]
    # As the index stage does when the search settings change: the index described again (its
    # nprobe for its lists, its measured recall), its segments as they are.
    options, described = ann.IndexOptions.defaults(), description["index"]
    redescribed = described["nprobe"] != ann.probes(options.nprobe, described["lists"])
    if redescribed:
        describe(run, build(run, tag, shards, options, 1), shards, options, tag)
    mixture = Mixture.spectral(clusters=max(16, int(items * CLUSTERS_PER_ITEM)), noise=0.04, seed=0)
    queries, exact, *_ = query_sets(mixture, shards, shard_size)
    served, serve_rss = in_child(serve_in_process, run, queries, exact, shard_size)
    row = {"items": items, "what": "served again", "served": served, "serve_rss_mb": serve_rss}
    if redescribed:
        row["described"] = json.loads((run / layout.served_index(GALLERY)).read_text())["index"]
    if http:
        row["http"] = serve_http(run)
    if nprobes:
        row["nprobe_sweep"], _ = in_child(nprobe_sweep, run, queries, exact, nprobes)
    return [row]


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        print(json.dumps(row, default=str))


def _nprobes(listed: str) -> tuple[int, ...]:
    return tuple(int(n) for n in listed.split(",") if n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, help="a synthetic gallery of this many items")
    parser.add_argument("--contest-run", action="store_true", help="the 50,000-image run of bench-serve")
    parser.add_argument("--shard-size", type=int, default=16384)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-index"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--usearch", action="store_true")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument(
        "--serve-only",
        action="store_true",
        help="measure the server over the index an earlier run of this size built",
    )
    parser.add_argument("--milvus", action="store_true", help="also export to Milvus Lite and search there")
    parser.add_argument(
        "--nprobe-sweep",
        default="",
        help="comma-separated nprobes: the served index's recall and latency at each (e.g. 32,64,128,256)",
    )
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    if not args.contest_run and args.items is None:
        parser.error("give --items N or --contest-run")
    if args.contest_run:
        rows = contest_run(args.workdir.parent)
    elif args.serve_only:
        rows = serve_again(
            args.items, args.workdir, args.shard_size, not args.no_http, _nprobes(args.nprobe_sweep)
        )
    else:
        rows = bench(
            args.items,
            args.workdir,
            args.shard_size,
            args.threads,
            args.usearch,
            not args.no_http,
            args.milvus,
            _nprobes(args.nprobe_sweep),
        )
    print_rows(rows)
    if args.report:
        with args.report.open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, default=str) + "\n" for row in rows)
    served = rows[0]["served"]
    text = served.get("text", {}).get("recall@10")
    print(
        f"recall@10 {served['recall@10']:.3f} p50 {served['1']['p50_ms']:.2f} ms "
        f"text_recall@10 {'—' if text is None else f'{text:.3f}'}"
    )


if __name__ == "__main__":
    main()
