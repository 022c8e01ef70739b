"""The run a user declares: its collections, tasks, training pairs, models and channel
switches, checked and resolved into one `Run`, the workflow's one source for them.

Torch-free and cheap: the Snakefile builds the run at parse time (it re-runs inside every
cluster job), so the checks here are a few stat calls and header reads. A run is data,
as a sample sheet is in a bioinformatics workflow: `declare_run(config)` reads the
config's `preset`, `collections`, `tasks`, `training`, `models` and the fusion and index
switches, checks them, and gives the `Run` every rule, script, the CLI and the server
read. The 2024 contest layout is the preset `contest` (tuwen.run.contest); `preset: none`
leaves only what the config declares.

Paths in a declaration are relative to `data_root` unless absolute. An image
collection is a folder, read recursively; an image's id is its path relative to the
folder (`2024/05/a.jpg`). A text collection is a CSV, TSV, JSON Lines or Parquet file
with an id column and a caption column.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuwen.errors import TuwenError
from tuwen.run import cn_clip_dataset, contest
from tuwen.run.channels import CLIP, OCR, TEXT, channel_name
from tuwen.run.layout import demo_data
from tuwen.run.schema import item_default, schema_default

# A collection's kind, everywhere: in the run, the manifests' names, feature shards' metadata.
IMAGES, TEXTS = "images", "texts"
# A model's stages: its base weights, and the fine-tuned ones when it trains.
BASE, FINETUNE = "base", "finetune"
# The collections training and fusion's validation make; no declared collection takes these names.
TRAIN_IMAGES, TRAIN_TEXTS = "train_images", "train_texts"
# Validation pairs declared apart (training.validation_pairs: CN-CLIP's valid split); without
# them a share of the training pairs is held out.
VALIDATION_IMAGES, VALIDATION_TEXTS = "validation_images", "validation_texts"
# Fusion's validation task: (at most fusion.validation_max_pairs of) the validation pairs.
VAL_IMAGES, VAL_TEXTS = "val_images", "val_texts"
RESERVED = (TRAIN_IMAGES, TRAIN_TEXTS, VALIDATION_IMAGES, VALIDATION_TEXTS, VAL_IMAGES, VAL_TEXTS)
PAIR_COLLECTIONS = (TRAIN_IMAGES, TRAIN_TEXTS, VALIDATION_IMAGES, VALIDATION_TEXTS)
# Names become folder names and Snakemake wildcards: keep them plain.
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
# The direction of a task, by the kind of its queries: fusion is chosen per direction.
DIRECTION_OF = {TEXTS: "t2i", IMAGES: "i2t"}
DEFAULT_TABLE_COLUMNS = ("query_id", "similarity_ranking", "result_id")


class DeclarationError(TuwenError):
    """A declaration the workflow cannot run, with the key and the fix in one line."""


@dataclass(frozen=True)
class Collection:
    """A set of items the run reads: images (a folder) or captions (a table file)."""

    name: str
    kind: str  # IMAGES or TEXTS
    source: str | None  # the folder or file; None: made by the run (validation)
    id_column: str = ""  # texts: the column that names an item
    caption_column: str = ""  # texts: the column of the caption
    # Texts whose ids name images of this image collection (the training pairs).
    pairs_with: str | None = None
    # Images: how the source is read (tuwen.files.containers: folder, cn_clip, webdataset,
    # parquet), and a parquet's image and id columns.
    format: str = "folder"
    image_column: str = ""
    image_id_column: str = ""

    @property
    def holds_images(self) -> bool:
        return self.kind == IMAGES

    @property
    def manifest_id(self) -> str:
        """The manifest column that names an item: `image_id` for images, `text_id` for texts."""
        return "image_id" if self.holds_images else "text_id"


@dataclass(frozen=True)
class QueryList:
    """A file that lists a task's queries in table order, when its collection holds more."""

    file: str
    id_column: str


@dataclass(frozen=True)
class GroundTruth:
    """A table of true (query id, gallery id) pairs for one task."""

    file: str
    query_column: str
    gallery_column: str


@dataclass(frozen=True)
class Task:
    """Queries of one collection ranked against the items of another, of the other kind."""

    name: str
    queries: str
    gallery: str
    query_kind: str
    k: int  # rows per query in the result table
    table: str = ""  # the result table's file name under results/ ("" = none)
    columns: tuple[str, str, str] = DEFAULT_TABLE_COLUMNS
    query_list: QueryList | None = None
    ground_truth: GroundTruth | None = None

    @property
    def direction(self) -> str:
        """`t2i` (caption queries) or `i2t` (image queries): fusion's choice is made per direction."""
        return DIRECTION_OF[self.query_kind]

    @property
    def image_side(self) -> str:
        return self.queries if self.query_kind == IMAGES else self.gallery

    @property
    def text_side(self) -> str:
        return self.gallery if self.query_kind == IMAGES else self.queries


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
    def ranking_stage(self) -> str:
        """Give the stage that ranks: the fine-tuned one when the model trains."""
        return self.stages[-1]

    def channel(self, stage: str) -> str:
        """Give a stage's channel: `clip:<name>` (the ranking stage) or `clip:<name>:<stage>`."""
        return channel_name(CLIP, self.name, None if stage == self.ranking_stage else stage)


@dataclass(frozen=True)
class Run:
    """Everything the run reads and asks, resolved: the workflow's one source for it."""

    data_root: str  # the folder declarations are relative to (the demo's, for data_root: demo)
    demo: bool
    collections: dict[str, Collection]
    tasks: dict[str, Task]
    models: tuple[Model, ...] = ()
    trains: bool = False  # training pairs declared (train_images and train_texts exist)
    validation_tasks: dict[str, Task] = field(default_factory=dict)
    fusion: bool = False  # fusion.enabled: the base models, OCR, sentence encoders, re-ranking
    ocr: bool = False  # OCR's channel (fusion.enabled and fusion.ocr)
    text_encoders: tuple[str, ...] = ()  # text:<encoder> channels (with OCR: they read its text)
    index: bool = False  # index.enabled: large galleries get an approximate index
    keywords: bool = False  # keywords.enabled: OCR reads every searchable image collection

    # ---- models and channels -------------------------------------------------------------

    @property
    def fuse(self) -> bool:
        """Whether the tables rank by a combination chosen on validation: with fusion on, or when
        several models rank (one model with fusion off ranks by its cosine alone)."""
        return self.fusion or len(self.models) > 1

    @property
    def ranking_model(self) -> Model:
        """Give the first model: its ranking stage ranks wherever no fusion recipe does."""
        return self.models[0]

    @property
    def trained_models(self) -> list[Model]:
        return [model for model in self.models if model.trains]

    def model(self, name: str) -> Model:
        return next(model for model in self.models if model.name == name)

    def clip_channels(self) -> list[tuple[Model, str]]:
        """Give (model, stage) of each CLIP channel, the ranking model's first: every model's
        ranking stage, and with fusion on every other stage of every model."""
        ranking = [(model, model.ranking_stage) for model in self.models]
        if not self.fusion:
            return ranking
        return ranking + [(m, s) for m in self.models for s in m.stages if s != m.ranking_stage]

    def channels(self) -> list[str]:
        """Give the name of every channel a fused task is scored by: the CLIP channels, each
        sentence encoder's, then OCR's."""
        names = [model.channel(stage) for model, stage in self.clip_channels()]
        names += [channel_name(TEXT, encoder) for encoder in self.text_encoders]
        return names + ([channel_name(OCR)] if self.ocr else [])

    # ---- collections and tasks ---------------------------------------------------------

    def of_kind(self, kind: str, declared: bool | None = None) -> list[str]:
        """Give the collections of a kind (optionally only those read from files, or made)."""
        return [
            c.name
            for c in self.collections.values()
            if c.kind == kind and (declared is None or (c.source is not None) == declared)
        ]

    def searchable(self) -> list[str]:
        """Give the collections the run encodes and serves: every declared one (not the
        training pairs, which only training reads, nor validation, which only fusion reads)."""
        return [n for n, c in self.collections.items() if c.source is not None and n not in PAIR_COLLECTIONS]

    def galleries(self) -> list[str]:
        """Give the collections queries are ranked against: the tasks' galleries, or every
        searchable collection of a run with no task (a photo library searched by the server)."""
        return list(dict.fromkeys(t.gallery for t in self.tasks.values())) or self.searchable()

    def indexed_galleries(self) -> list[str]:
        """Give the galleries an approximate index may serve (index.enabled); each is indexed
        once it holds index.min_items items."""
        return self.galleries() if self.index else []

    def judged_tasks(self) -> dict[str, Task]:
        """Give the tasks with ground truth: evaluation and fusion's test rows score them."""
        return {name: task for name, task in self.tasks.items() if task.ground_truth}

    @property
    def validates_apart(self) -> bool:
        """Whether validation pairs are declared apart from the training pairs (else a share
        of the training pairs, train.val_fraction, is held out)."""
        return VALIDATION_TEXTS in self.collections

    def used_collections(self) -> list[str]:
        """Give the collections whose shard registry the run reads: every searchable one, the
        training images where locked-image training reads their features, and fusion's
        validation collections."""
        used = self.searchable()
        if any(model.train["lock_image"] for model in self.trained_models):
            used.append(TRAIN_IMAGES)
            if self.validates_apart:
                used.append(VALIDATION_IMAGES)
        if self.fuse:
            used += [name for task in self.validation_tasks.values() for name in (task.queries, task.gallery)]
        return list(dict.fromkeys(used))

    @property
    def reads_text(self) -> bool:
        """Whether OCR reads text in images: for fusion's OCR channel, or for keyword search."""
        return self.ocr or self.keywords

    def ocr_collections(self) -> list[str]:
        """Give the image collections whose text OCR reads: the image side of every task (for
        fusion's OCR channel), and with keyword search every searchable image collection."""
        sides = []
        if self.ocr:
            sides += [t.image_side for t in [*self.tasks.values(), *self.validation_tasks.values()]]
        if self.keywords:
            sides += [name for name in self.searchable() if self.collections[name].kind == IMAGES]
        return list(dict.fromkeys(sides))

    def default_gallery(self, query_kind: str) -> str | None:
        """Give the collection a query of `query_kind` searches by default: its task's gallery,
        or the first searchable collection of the other kind (of its own kind where none)."""
        task = next((t for t in self.tasks.values() if t.query_kind == query_kind), None)
        if task is not None:
            return task.gallery
        other = TEXTS if query_kind == IMAGES else IMAGES
        searchable = self.searchable()
        of_other = [n for n in searchable if self.collections[n].kind == other]
        return next(iter(of_other or searchable), None)

    # ---- as data ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Give the run as plain data; collections, tasks and models as lists, which keep their order."""
        data = asdict(self)
        for key in ("collections", "tasks", "validation_tasks"):
            data[key] = list(data[key].values())
        # A model as its readers need it: its weights and whether it trains (its training
        # settings are its own settings files', and speed-only ones belong to no file).
        data["models"] = [
            {"name": m.name, "checkpoint": m.checkpoint, "trains": m.trains} for m in self.models
        ]
        data["text_encoders"] = list(self.text_encoders)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Run:
        def task(spec: dict) -> Task:
            query_list = QueryList(**spec["query_list"]) if spec.get("query_list") else None
            truth = GroundTruth(**spec["ground_truth"]) if spec.get("ground_truth") else None
            return Task(
                **{**spec, "columns": tuple(spec["columns"]), "query_list": query_list, "ground_truth": truth}
            )

        return cls(
            data["data_root"],
            data["demo"],
            {spec["name"]: Collection(**spec) for spec in data["collections"]},
            {spec["name"]: task(spec) for spec in data["tasks"]},
            tuple(Model(m["name"], m["checkpoint"], {"enabled": m["trains"]}) for m in data["models"]),
            data["trains"],
            {spec["name"]: task(spec) for spec in data["validation_tasks"]},
            data["fusion"],
            data["ocr"],
            tuple(data["text_encoders"]),
            data["index"],
            data.get("keywords", False),
        )


# ---- declaring the run ------------------------------------------------------------------


def data_folder(data_root: str) -> str:
    """Give the folder a `data_root` setting names ("demo": the embedded demo's, relative to the run)."""
    return demo_data() if data_root == "demo" else os.path.expanduser(data_root)


def declare_run(config: dict, check_files: bool = True) -> Run:
    """Give the run the config declares, checked; a `DeclarationError` names the key and the fix.

    With `check_files`, every folder, file and column is looked at now (a stat and a
    header), so that a typo stops the run before any job; the demo's files are made by
    the run and are not checked.
    """
    demo = config["data_root"] == "demo"
    preset = config["preset"]
    root = data_folder(config["data_root"])
    if preset == contest.NONE and demo:
        raise DeclarationError(
            "data_root: demo is the contest preset's demo; with preset: none set data_root to your "
            "folder (--config data_root=/path/to/folder)"
        )
    declared_collections = dict(config.get("collections") or {})
    declared_tasks = dict(config.get("tasks") or {})
    training = dict(config.get("training") or {})
    if preset == contest.CONTEST:
        for key, preset_items in (("collections", contest.COLLECTIONS), ("tasks", contest.TASKS)):
            given = declared_collections if key == "collections" else declared_tasks
            taken = sorted(set(given) & set(preset_items))
            if taken:
                raise DeclarationError(
                    f"{key}.{taken[0]} is a name of the contest preset; choose another name, "
                    "or set preset: none and declare the whole run"
                )
        if check_files and not demo:
            _check_contest_layout(root)
        declared_collections = {**contest.COLLECTIONS, **declared_collections}
        declared_tasks = {**contest.TASKS, **declared_tasks}
        training = {**contest.TRAINING, **{k: v for k, v in training.items() if v}}
    elif preset == cn_clip_dataset.CN_CLIP:
        if demo:
            raise DeclarationError("preset: cn_clip reads a CN-CLIP dataset folder: set data_root to it")
        missing = cn_clip_dataset.missing_files(root) if check_files else []
        if missing:
            raise DeclarationError(
                f"data_root {root!r} is not a CN-CLIP dataset folder (preset: cn_clip); it needs "
                f"{' and '.join(missing[:2])} (or {' and '.join(missing[2:])}), as cn_clip's "
                "scripts write them"
            )
        collections, tasks, preset_training = cn_clip_dataset.preset(root)
        declared_collections = {**collections, **declared_collections}
        declared_tasks = {**tasks, **declared_tasks}
        # The preset names its own columns; the config's replace them where they are not the defaults.
        given = {k: v for k, v in training.items() if v and v != schema_default(f"training.{k}")}
        training = {**preset_training, **given}
    check = check_files and not demo

    collections = {name: _collection(name, spec, root, check) for name, spec in declared_collections.items()}
    trains = bool(training.get("pairs"))
    if trains:
        collections.update(_training_collections(training, root, check))
    elif training.get("images"):
        raise DeclarationError(
            "training.images is set but training.pairs is not; name the pairs table, or drop both"
        )

    tasks = {
        name: _task(name, spec, collections, root, check, preset, config["ground_truth"])
        for name, spec in declared_tasks.items()
    }
    if not any(c.source for c in collections.values()):
        raise DeclarationError(
            "the run declares no collection: add one under collections (e.g. "
            "collections: {photos: {images: .}}), or use preset: contest"
        )
    validation = _validation_tasks() if trains else {}
    if trains:
        collections[VAL_IMAGES] = Collection(VAL_IMAGES, IMAGES, None)
        collections[VAL_TEXTS] = Collection(VAL_TEXTS, TEXTS, None, "text_id", "caption")
    fusion = config["fusion"]
    use_ocr = bool(fusion["enabled"] and fusion["ocr"])
    run = Run(
        root,
        demo,
        collections,
        tasks,
        declared_models(config, trains),
        trains,
        validation,
        fusion=bool(fusion["enabled"]),
        ocr=use_ocr,
        # Sentence encoders match captions with the text OCR reads in the images: only with OCR.
        text_encoders=tuple(fusion["text_encoders"]) if use_ocr else (),
        index=bool(config["index"]["enabled"]),
        keywords=bool(config["keywords"]["enabled"]),
    )
    if run.fuse and not trains:
        raise DeclarationError(
            "fusion (fusion.enabled, or several models) is chosen on held-out training pairs, and "
            "this run declares none: add training (pairs and images), or use one model with fusion off"
        )
    return run


def declared_models(config: dict, has_training_pairs: bool = True) -> tuple[Model, ...]:
    """Give the run's models from its config (`models`, each a name or a mapping); none
    trains where the run declares no training pairs."""
    models = []
    for item in config["models"]:
        spec: dict[str, Any] = {"name": item} if isinstance(item, str) else item
        train = {**config["train"], **spec.get("train", {})}
        if not has_training_pairs:
            train["enabled"] = False
        models.append(Model(spec["name"], spec.get("checkpoint", ""), train))
    names = [m.name for m in models]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DeclarationError(
            f"models: {', '.join(repeated)} given twice; each model is named by its architecture"
        )
    return tuple(models)


def _check_contest_layout(root: str) -> None:
    missing = contest.missing_contest_files(root)
    if missing:
        raise DeclarationError(
            f"data_root {root!r} does not hold the contest layout (preset: contest); missing: "
            + ", ".join(missing)
            + ". Point data_root at the folder that contains 附件1, 附件2 and 附件3, or set "
            'preset: none and declare your own collections (README.md, "Your own data")'
        )


def _resolve(root: str, path: str) -> str:
    path = os.path.expanduser(str(path))
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path))


def _check_name(key: str, name: str) -> None:
    if not name or set(name) - NAME_CHARACTERS:
        raise DeclarationError(f"{key}: the name {name!r} may use only letters, digits, '_' and '-'")


def _collection(name: str, spec: dict, root: str, check: bool) -> Collection:
    key = f"collections.{name}"
    _check_name(key, name)
    if name in RESERVED:
        raise DeclarationError(
            f"{key}: {name} is made by the run itself (training, validation); choose another name"
        )
    if not isinstance(spec, dict) or ("images" in spec) == ("texts" in spec):
        raise DeclarationError(
            f"{key}: give either images: FOLDER or texts: FILE (with id_column and caption_column)"
        )
    keys = {"images", "texts", "id_column", "caption_column", "format", "image_column", "image_id_column"}
    unknown = sorted(set(spec) - keys)
    if unknown:
        raise DeclarationError(f"{key}.{unknown[0]}: not a key of a collection ({', '.join(sorted(keys))})")
    if "images" in spec:
        return _image_collection(key, name, spec, _resolve(root, spec["images"]), check)
    path = _resolve(root, spec["texts"])
    id_column = spec.get("id_column", item_default("collections", "id_column"))
    caption_column = spec.get("caption_column", item_default("collections", "caption_column"))
    if check:
        check_table(f"{key}.texts", path, [id_column, caption_column])
    return Collection(name, TEXTS, path, id_column, caption_column)


def _image_collection(
    key: str, name: str, spec: dict, source: str, check: bool, images_key: str = ""
) -> Collection:
    from tuwen.files.containers import FOLDER, PARQUET, detect_image_format

    images_key = images_key or f"{key}.images"
    image_format = spec.get("format") or "auto"
    if image_format == "auto":
        image_format = detect_image_format(source)
    if image_format == FOLDER:
        if check:
            _check_image_folder(images_key, source)
        return Collection(name, IMAGES, source)
    if check:
        _check_containers(images_key, source, image_format)
    image_column = spec.get("image_column") or ("image" if image_format == PARQUET else "")
    return Collection(
        name,
        IMAGES,
        source,
        format=image_format,
        image_column=image_column,
        image_id_column=spec.get("image_id_column", ""),
    )


def _check_containers(key: str, source: str, image_format: str) -> None:
    from tuwen.files.containers import CONTAINER_SUFFIXES, container_files

    endings = ", ".join(CONTAINER_SUFFIXES[image_format])
    if not os.path.exists(source):
        raise DeclarationError(
            f"{key}: {source} does not exist; point it at a {image_format} file ({endings})"
        )
    if not container_files(source, image_format):
        raise DeclarationError(f"{key}: {source} holds no {image_format} file ({endings})")


def _training_collections(training: dict, root: str, check: bool) -> dict[str, Collection]:
    if not training.get("images"):
        raise DeclarationError(
            "training.images: name the folder that the pairs' image column is resolved against"
        )
    folder = _resolve(root, training["images"])
    pairs = _resolve(root, training["pairs"])
    image_column = training["image_column"]
    caption_column = training["caption_column"]
    images = _image_collection("training", TRAIN_IMAGES, {"images": folder}, folder, check)
    if check:
        check_table("training.pairs", pairs, [image_column, caption_column])
    collections = {
        TRAIN_IMAGES: images,
        TRAIN_TEXTS: Collection(TRAIN_TEXTS, TEXTS, pairs, image_column, caption_column, TRAIN_IMAGES),
    }
    if training.get("validation_pairs"):
        # The same columns as the training pairs; images from their own folder or the training one's.
        val_folder = _resolve(root, training.get("validation_images") or training["images"])
        val_pairs = _resolve(root, training["validation_pairs"])
        images_key = "training.validation_images" if training.get("validation_images") else ""
        collections[VALIDATION_IMAGES] = _image_collection(
            "training", VALIDATION_IMAGES, {"images": val_folder}, val_folder, check, images_key
        )
        if check:
            check_table("training.validation_pairs", val_pairs, [image_column, caption_column])
        collections[VALIDATION_TEXTS] = Collection(
            VALIDATION_TEXTS, TEXTS, val_pairs, image_column, caption_column, VALIDATION_IMAGES
        )
    elif training.get("validation_images"):
        raise DeclarationError(
            "training.validation_images is set but training.validation_pairs is not; name the "
            "validation pairs table, or drop both"
        )
    return collections


def _task(
    name: str,
    spec: dict,
    collections: dict[str, Collection],
    root: str,
    check: bool,
    preset: str,
    ground_truth: str,
) -> Task:
    key = f"tasks.{name}"
    _check_name(key, name)
    unknown = sorted(
        set(spec) - {"queries", "gallery", "k", "table", "columns", "query_list", "ground_truth"}
    )
    if unknown:
        raise DeclarationError(
            f"{key}.{unknown[0]}: not a key of a task "
            "(queries, gallery, k, table, columns, query_list, ground_truth)"
        )
    for side in ("queries", "gallery"):
        if spec.get(side) not in collections or spec.get(side) in RESERVED:
            known = ", ".join(n for n in collections if n not in RESERVED) or "(none)"
            raise DeclarationError(
                f"{key}.{side}: {spec.get(side)!r} is not a declared collection (collections: {known})"
            )
    queries, gallery = collections[spec["queries"]], collections[spec["gallery"]]
    if queries.kind == gallery.kind:
        raise DeclarationError(
            f"{key}: queries {queries.name} and gallery {gallery.name} both hold {queries.kind}; a task "
            "ranks one kind against the other (captions against images, or images against captions)"
        )
    k = int(spec.get("k", item_default("tasks", "k")))
    if k < 1:
        raise DeclarationError(f"{key}.k: {k} hits per query; give at least 1")
    columns = tuple(spec.get("columns") or DEFAULT_TABLE_COLUMNS)
    if len(columns) != 3 or len(set(columns)) != 3:
        raise DeclarationError(
            f"{key}.columns: give three different names (query id, rank, result id), not {list(columns)}"
        )
    table = str(spec.get("table", item_default("tasks", "table")) or "")
    if table and (os.path.basename(table) != table or not table.endswith(".csv")):
        raise DeclarationError(
            f"{key}.table: {table!r} should be a file name ending in .csv (it is written under results/)"
        )
    query_list = None
    if spec.get("query_list"):
        listed = spec["query_list"]
        id_column = listed.get("id_column", queries.manifest_id)
        query_list = QueryList(_resolve(root, listed["file"]), id_column)
        if check:
            check_table(f"{key}.query_list.file", query_list.file, [id_column])
    truth = _ground_truth(key, spec, queries, root, check, preset, ground_truth)
    three = (columns[0], columns[1], columns[2])
    return Task(name, queries.name, gallery.name, queries.kind, k, table, three, query_list, truth)


def _ground_truth(
    key: str, spec: dict, queries: Collection, root: str, check: bool, preset: str, setting: str
) -> GroundTruth | None:
    given = spec.get("ground_truth")
    if given:
        truth = GroundTruth(
            _resolve(root, given["file"]),
            given.get("query_column", item_default("tasks", "ground_truth.query_column")),
            given.get("gallery_column", item_default("tasks", "ground_truth.gallery_column")),
        )
        if check:
            check_table(f"{key}.ground_truth.file", truth.file, [truth.query_column, truth.gallery_column])
        return truth
    if preset != contest.CONTEST or not setting:
        return None
    file = _resolve(root, contest.GROUND_TRUTH) if setting == "auto" else os.path.expanduser(setting)
    if setting == "auto" and check and not os.path.isfile(file):
        return None
    return contest_ground_truth(file, queries.kind)


def contest_ground_truth(file: str, query_kind: str) -> GroundTruth:
    """Give the contest's ground truth (`text_id,image_id` pairs) for a task whose queries
    are of `query_kind`: the columns follow the queries."""
    return GroundTruth(file, *contest.TRUTH_COLUMNS[query_kind])


def _validation_tasks() -> dict[str, Task]:
    """Fusion's validation task: the training pairs held out, both directions (no table)."""
    k = item_default("tasks", "k")
    return {
        "t2i": Task("t2i", VAL_TEXTS, VAL_IMAGES, TEXTS, k),
        "i2t": Task("i2t", VAL_IMAGES, VAL_TEXTS, IMAGES, k),
    }


def _check_image_folder(key: str, folder: str) -> None:
    from tuwen.files.folders import has_image_file

    if not os.path.isdir(folder):
        raise DeclarationError(f"{key}: {folder} is not a folder; point it at a folder of images")
    if not has_image_file(folder):
        raise DeclarationError(
            f"{key}: {folder} holds no image file (searched recursively); nothing to search"
        )


def check_table(key: str, path: str, columns: list[str]) -> None:
    """Check that a table file exists, has a format tuwen reads, the columns, and a row."""
    from tuwen.files.records import TABLE_SUFFIXES, InputError, table_header

    folder = os.path.isdir(path)  # webdataset shards' text members
    if not folder and Path(path).suffix.lower() not in TABLE_SUFFIXES:
        raise DeclarationError(
            f"{key}: {path} is not a CSV, TSV, JSON Lines, Parquet, COCO .json or webdataset .tar "
            "file (by its name's ending), nor a folder of .tar shards"
        )
    if not folder and not os.path.isfile(path):
        raise DeclarationError(f"{key}: {path} does not exist")
    try:
        found, has_rows = table_header(path)
    except InputError as error:
        raise DeclarationError(f"{key}: {error}") from None
    missing = [c for c in columns if c not in found]
    if missing:
        raise DeclarationError(
            f"{key}: {path} has no column {missing[0]!r} (columns: {', '.join(found) or '(none)'}); "
            "name its columns in the config"
        )
    if not has_rows:
        raise DeclarationError(f"{key}: {path} has a header but no rows; nothing to read")
