"""What a run is, said once: its collections, tasks, models and every path under results/.

Torch-free and cheap (the Snakefile imports it at parse time). Rules, scripts, the CLI,
the browse page and fusion ask this module for a collection's kind, id column and
source, for a task's queries, gallery and result table, and for the path of any file;
nothing else builds a path under results/ or guesses what a collection holds.

Paths are relative to a run folder (Snakemake's working directory). Every path function
also takes Snakemake wildcard patterns, e.g. `features("{tag}", "{name}", "{shard}")`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

IMAGES, TEXTS = "images", "texts"
RESULTS = "results"
BASE, FINETUNE = "base", "finetune"


@dataclass(frozen=True)
class Collection:
    """A set of items the run reads: images (a folder) or captions (a CSV)."""

    name: str
    kind: str  # IMAGES or TEXTS
    id_column: str  # the manifest column that names an item
    source: str | None  # folder or CSV under data_root; None: made from the training pairs

    @property
    def holds_images(self) -> bool:
        return self.kind == IMAGES


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection("train_images", IMAGES, "image_id", "附件1/ImageData"),
        Collection("t2i_gallery", IMAGES, "image_id", "附件2/ImageData"),
        Collection("i2t_images", IMAGES, "image_id", "附件3/ImageData"),
        Collection("train_texts", TEXTS, "image_id", "附件1/ImageWordData.csv"),
        Collection("t2i_queries", TEXTS, "text_id", "附件2/word_test.csv"),
        Collection("i2t_gallery", TEXTS, "text_id", "附件3/word_data.csv"),
        # Fusion's validation task: 附件1's held-out pairs, made from the training manifests.
        Collection("val_images", IMAGES, "image_id", None),
        Collection("val_texts", TEXTS, "text_id", None),
    )
}
# A text set whose ids must name images of a folder: the training pairs.
PAIRED_FOLDER = {"train_texts": "train_images"}


def of_kind(kind: str, from_data: bool | None = None) -> list[str]:
    """Give the names of the collections of a kind (optionally only those read from data_root)."""
    return [
        c.name
        for c in COLLECTIONS.values()
        if c.kind == kind and (from_data is None or (c.source is not None) == from_data)
    ]


@dataclass(frozen=True)
class Task:
    """A retrieval direction: queries of one collection against the gallery of another."""

    name: str
    queries: str
    gallery: str
    table: str  # file name of its contest result table ("" for the validation task)
    columns: tuple[str, str, str]  # the table's header
    # A CSV under data_root that lists the queries in table order, when the query
    # collection holds more than the queries (附件3's folder holds the query images).
    query_list: str | None = None

    @property
    def query_kind(self) -> str:
        return COLLECTIONS[self.queries].kind


TASKS: dict[str, Task] = {
    "t2i": Task(
        "t2i",
        "t2i_queries",
        "t2i_gallery",
        "result1.csv",
        ("text_id", "similarity_ranking", "result_image_id"),
    ),
    "i2t": Task(
        "i2t",
        "i2t_images",
        "i2t_gallery",
        "result2.csv",
        ("image_id", "similarity_ranking", "result_text_id"),
        query_list="附件3/image_test.csv",
    ),
}
# The same two directions on fusion's validation task (the training hold-out).
VALIDATION_TASKS: dict[str, Task] = {
    "t2i": Task("t2i", "val_texts", "val_images", "", TASKS["t2i"].columns),
    "i2t": Task("i2t", "val_images", "val_texts", "", TASKS["i2t"].columns),
}


def image_side(task: Task) -> str:
    """Give the collection of a task that holds images."""
    return task.queries if COLLECTIONS[task.queries].holds_images else task.gallery


def text_side(task: Task) -> str:
    """Give the collection of a task that holds captions."""
    return task.gallery if COLLECTIONS[task.queries].holds_images else task.queries


# ---- models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """One CN-CLIP model of the run: its architecture name (also its name in paths and
    channels), its weights, and its training settings (the run's, with its own overrides)."""

    name: str
    checkpoint: str = ""  # "" = released weights by name, or seeded for the small architectures
    train: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def trains(self) -> bool:
        return bool(self.train.get("enabled"))

    @property
    def stages(self) -> list[str]:
        """Give the model's stages: its base weights and, when it trains, the fine-tuned ones."""
        return [BASE, FINETUNE] if self.trains else [BASE]

    @property
    def retrieval_stage(self) -> str:
        """Give the stage that ranks: the fine-tuned one when the model trains."""
        return self.stages[-1]

    def channel(self, stage: str) -> str:
        """Give a stage's fusion channel: `clip:<name>` (the ranking stage) or `clip:<name>:base`."""
        return f"clip:{self.name}" if stage == self.retrieval_stage else f"clip:{self.name}:{stage}"


def run_models(config: dict) -> list[Model]:
    """Give the run's models from its config (`models`, each a name or a mapping)."""
    models = []
    for item in config["models"]:
        spec = {"name": item} if isinstance(item, str) else item
        train = {**config["train"], **spec.get("train", {})}
        models.append(Model(spec["name"], spec.get("checkpoint", ""), train))
    names = [m.name for m in models]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"models: {', '.join(repeated)} given twice; each model is named by its architecture"
        )
    return models


# ---- paths ---------------------------------------------------------------------------
# Every path under results/, as a function; a `str` argument may be a wildcard pattern.


def _path(*parts: str) -> str:
    return "/".join((RESULTS, *parts))


def manifest(name: str, kind: str | None = None) -> str:
    """The validated manifest of a collection (images.parquet or texts.parquet); give `kind`
    when `name` is a wildcard pattern."""
    return _path("manifest", name, f"{kind or COLLECTIONS[name].kind}.parquet")


def rejects(name: str) -> str:
    return _path("manifest", name, "rejects.csv")


def query_list(task: str) -> str:
    """The manifest of a task's query list (Task.query_list), checked against its collection."""
    return _path("manifest", f"{task}_queries", "queries.parquet")


def query_list_rejects(task: str) -> str:
    return _path("manifest", f"{task}_queries", "rejects.csv")


def query_order(task: Task) -> str:
    """The file that lists a task's queries in the order of its result table."""
    return query_list(task.name) if task.query_list else manifest(task.queries)


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


def model_card_parts(path: str) -> tuple[str, str]:
    """Give the (model, stage) a model card's path names: `model_card`'s inverse."""
    *_, model, stage, _ = path.replace("\\", "/").split("/")
    return model, stage


def model_cards_glob() -> str:
    """Every model card of a run, as a glob relative to the run folder."""
    return _path("models", "*", "*", "model.json")


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


def result_table(task: Task) -> str:
    return _path(task.table)


def result_table_pattern() -> str:
    """Every task's result table, with the wildcard {table} (Task.table)."""
    return _path("{table}")


def fusion(name: str) -> str:
    """A file of fusion's choice on validation (chosen.json, validation.csv)."""
    return _path("fusion", name)


def evaluation(name: str) -> str:
    return _path("eval", name)


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


def data_folder(data_root: str) -> str:
    """Give the contest-layout folder a `data_root` setting names ("demo": the embedded demo's,
    relative to the run folder)."""
    return demo_data() if data_root == "demo" else os.path.expanduser(data_root)


def ground_truth_file(setting: str, data_root: str) -> str | None:
    """Give the ground-truth CSV a `ground_truth` setting names ("auto": the data folder's
    ground_truth.csv; "": none). Whether it exists is the caller's question: the demo
    writes its own during the run."""
    if setting == "auto":
        return os.path.join(data_folder(data_root), "ground_truth.csv")
    return setting or None


def demo_data() -> str:
    """Where the embedded demo writes its contest-layout folder."""
    return _path("demo", "data")
