"""Every path under results/, said once: nothing else builds a path there.

Torch-free and cheap (the Snakefile imports it at parse time). Rules, scripts, the reader
of a finished run, the browse page and fusion ask this module for the path of any file.
Paths are relative to a run folder (Snakemake's working directory). Every path function
also takes Snakemake wildcard patterns, e.g. `features("{tag}", "{name}", "{shard}")`.
"""

from __future__ import annotations

RESULTS = "results"


# ---- paths ---------------------------------------------------------------------------
# Every path under results/, as a function; a `str` argument may be a wildcard pattern.


def _path(*parts: str) -> str:
    return "/".join((RESULTS, *parts))


def manifest(name: str, kind: str) -> str:
    """The validated manifest of a collection of `kind` (images.parquet or texts.parquet)."""
    return _path("manifest", name, f"{kind}.parquet")


def rejects(name: str) -> str:
    return _path("manifest", name, "rejects.csv")


def query_list(task: str) -> str:
    """The manifest of a task's query list (`QueryList`), checked against its collection."""
    return _path("query_lists", task, "queries.parquet")


def query_list_rejects(task: str) -> str:
    return _path("query_lists", task, "rejects.csv")


def scan_cache(name: str) -> str:
    return _path("cache", "ingest", f"{name}.parquet")


def search_cache(task: str) -> str:
    """The folder where a direction's search keeps each gallery shard's partial top-k."""
    return _path("cache", "search", task)


def registry(name: str) -> str:
    return _path("shards", name)


def assignment(name: str) -> str:
    return _path("shards", name, "assignment.parquet")


def shard_list(name: str, shard: str) -> str:
    return _path("shards", name, "lists", f"{shard}.parquet")


def features_folder(tag: str, name: str) -> str:
    return _path("features", tag, name)


def features(tag: str, name: str, shard: str) -> str:
    return _path("features", tag, name, f"{shard}.parquet")


def sentences(encoder: str, name: str, shard: str) -> str:
    """A shard's sentence embeddings (captions, or the text OCR read in images) by one encoder."""
    return _path("sentences", encoder, name, f"{shard}.parquet")


def sentences_folder(encoder: str, name: str) -> str:
    return _path("sentences", encoder, name)


def sentence_encoder_card(encoder: str) -> str:
    """What a sentence encoder is (name, version, dimension, tag), as the run loaded it."""
    return _path("sentences", encoder, "encoder.json")


def ocr(name: str, shard: str) -> str:
    return _path("ocr", name, f"{shard}.parquet")


def ocr_folder(name: str) -> str:
    return _path("ocr", name)


def settings(group: str) -> str:
    return _path("settings", f"{group}.json")


def init_checkpoint(arch: str, seed: str | int) -> str:
    return _path("models", "init", f"{arch}-seed{seed}.pt")


def model_card(model: str, stage: str) -> str:
    return _path("models", model, stage, "model.json")


def model_towers(model: str, stage: str, name: str = "towers.json") -> str:
    """A model stage's towers exported to ONNX (text.onnx, image.onnx) and their description."""
    return _path("models", model, stage, "towers", name)


def fine_tuned(model: str, name: str) -> str:
    """A file of a model's fine-tuning (checkpoint.pt, train_log.csv, curves.png, ...)."""
    return _path("models", model, "finetune", name)


def train_state(model: str) -> str:
    return _path("models", model, "finetune", "state", "last.pt")


def retrieval(task: str, name: str) -> str:
    """A file of one direction's search (queries.parquet, topk.parquet, ...)."""
    return _path("retrieval", task, name)


def topk(task: str) -> str:
    return retrieval(task, "topk.parquet")


def served_index(collection: str) -> str:
    """A gallery's approximate index (tuwen.ranking.index) as the server reads it: its model, trained
    file, segments, settings and measured recall, or why the gallery is searched exactly."""
    return _path("index", collection, "index.json")


def index_trained(collection: str, tag: str, trained: str) -> str:
    """The index of a model's embeddings of a collection, trained on its first `trained` shards."""
    return _path("index", collection, tag, f"trained-{trained}.faiss")


def index_segment(collection: str, tag: str, trained: str, start: str, shards: str) -> str:
    """A segment of that index: the rows of `shards` shards from the `start`-th."""
    return _path("index", collection, tag, f"t{trained}", f"segment-{start}-{shards}.faiss")


def index_segment_rows(collection: str, tag: str, trained: str, start: str, shards: str) -> str:
    """That segment's rows in float16, read memory-mapped to re-score its candidates."""
    return _path("index", collection, tag, f"t{trained}", f"segment-{start}-{shards}.rows")


def query_bank(task: str) -> str:
    """A fused task's re-ranking normaliser per gallery item (tuwen.ranking.scoring.QueryBank)."""
    return retrieval(task, "query_bank.parquet")


def result_table(table: str) -> str:
    """A task's result table, by its file name (`Task.table`); may be the pattern {table}."""
    return _path(table)


def fusion(name: str) -> str:
    """A file of fusion's choice on validation (chosen.json, validation.csv)."""
    return _path("fusion", name)


def duplicate_hashes(name: str, shard: str) -> str:
    """A shard's perceptual hashes and its pairs with itself and the earlier shards."""
    return _path("duplicates", name, f"{shard}.parquet")


def duplicate_pairs(name: str, shard: str) -> str:
    return _path("duplicates", name, f"{shard}.pairs.parquet")


def duplicates(name: str) -> str:
    """An image collection's groups of exact and near copies."""
    return _path("duplicates", f"{name}.csv")


def tags(name: str) -> str:
    """An image collection's zero-shot tags: each photo's best labels."""
    return _path("tags", f"{name}.csv")


def evaluation(name: str) -> str:
    return _path("eval", name)


# Each judged task's files in cn_clip's evaluation format (tuwen.report.cn_clip_format).
CN_CLIP_FILES = ("reference.jsonl", "predictions.jsonl", "ids.csv", "output.json")


def cn_clip_evaluation(task: str, name: str) -> str:
    """A judged task's files in cn_clip's evaluation format (tuwen.report.cn_clip_format)."""
    return _path("eval", "cn_clip", task, name)


def summary(name: str) -> str:
    return _path("summary", name)


def figure(task: str, name: str) -> str:
    return _path("figures", task, name)


def browse(name: str) -> str:
    return _path("browse", name)


def log(*parts: str) -> str:
    return _path("logs", *parts[:-1], f"{parts[-1]}.log")


def benchmark(*parts: str) -> str:
    return _path("benchmarks", *parts[:-1], f"{parts[-1]}.tsv")


def demo_data() -> str:
    """Where the embedded demo writes its contest-layout folder."""
    return _path("demo", "data")


def finished() -> str:
    """The record of a finished run (tuwen.finished): every file its readers read, with the size
    and modification time each had when the run finished."""
    return _path("finished.json")
