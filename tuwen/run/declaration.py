"""The run a user declares: its collections, tasks, training pairs and ground truth.

Torch-free and cheap: the Snakefile builds the run at parse time (it re-runs inside every
cluster job), so the checks here are a few stat calls and header reads. A run is data,
as a sample sheet is in a bioinformatics workflow: `declare_run(config)` reads the
config's `preset`, `collections`, `tasks` and `training`, checks them, and gives the
`Run` every rule, script, the CLI and the server read. The 2024 contest layout
(附件1, 附件2, 附件3) and the embedded demo are the preset `contest`; `preset: none`
leaves only what the config declares.

Paths in a declaration are relative to `data_root` unless absolute. An image
collection is a folder, read recursively; an image's id is its path relative to the
folder (`2024/05/a.jpg`). A text collection is a CSV, TSV, JSON Lines or Parquet file
with an id column and a caption column.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuwen.errors import TuwenError
from tuwen.run.layout import IMAGES, TEXTS, demo_data

CONTEST, NONE = "contest", "none"
# The collections training and fusion's validation make; no declared collection takes these names.
TRAIN_IMAGES, TRAIN_TEXTS = "train_images", "train_texts"
VAL_IMAGES, VAL_TEXTS = "val_images", "val_texts"
RESERVED = (TRAIN_IMAGES, TRAIN_TEXTS, VAL_IMAGES, VAL_TEXTS)
# Names become folder names and Snakemake wildcards: keep them plain.
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
# The direction of a task, by the kind of its queries: fusion is chosen per direction.
DIRECTION_OF = {TEXTS: "t2i", IMAGES: "i2t"}
DEFAULT_TABLE_COLUMNS = ("query_id", "similarity_ranking", "result_id")


class RunError(TuwenError):
    """A declaration the workflow cannot run, with the key and the fix in one line."""


@dataclass(frozen=True)
class Collection:
    """A set of items the run reads: images (a folder) or captions (a table file)."""

    name: str
    kind: str  # IMAGES or TEXTS
    source: str | None  # the folder or file; None: made by the run (validation)
    id_column: str = "text_id"  # texts: the column that names an item
    caption_column: str = "caption"  # texts: the column of the caption
    # Texts whose ids name images of this image collection (the training pairs).
    pairs_with: str | None = None

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
    k: int = 5  # rows per query in the result table
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
class Run:
    """Everything the run reads and asks, resolved: the workflow's one source for it."""

    data_root: str  # the folder declarations are relative to (the demo's, for data_root: demo)
    demo: bool
    collections: dict[str, Collection]
    tasks: dict[str, Task]
    trains: bool = False  # training pairs declared (train_images and train_texts exist)
    validation_tasks: dict[str, Task] = field(default_factory=dict)

    def of_kind(self, kind: str, declared: bool | None = None) -> list[str]:
        """Give the collections of a kind (optionally only those read from files, or made)."""
        return [
            c.name
            for c in self.collections.values()
            if c.kind == kind and (declared is None or (c.source is not None) == declared)
        ]

    def galleries(self) -> list[str]:
        """Give the collections queries are ranked against: the tasks' galleries, or every
        searchable collection of a run with no task (a photo library searched by the server)."""
        return list(dict.fromkeys(t.gallery for t in self.tasks.values())) or self.searchable()

    def searchable(self) -> list[str]:
        """Give the collections the run encodes and serves: every declared one (not the
        training pairs, which only training reads, nor validation, which only fusion reads)."""
        return [
            n
            for n, c in self.collections.items()
            if c.source is not None and n not in (TRAIN_IMAGES, TRAIN_TEXTS)
        ]

    def to_dict(self) -> dict:
        """Give the run as plain data; collections and tasks as lists, which keep their order."""
        data = asdict(self)
        for key in ("collections", "tasks", "validation_tasks"):
            data[key] = list(data[key].values())
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
            data["trains"],
            {spec["name"]: task(spec) for spec in data["validation_tasks"]},
        )


def read_run(run_folder: str | os.PathLike) -> Run:
    """Give the run a finished run folder declared (results/settings/run.json)."""
    from tuwen.run.layout import settings

    path = Path(run_folder) / settings("run")
    if not path.is_file():
        raise RunError(
            f"{run_folder} holds no finished run ({settings('run')} is missing); "
            f"run the workflow there first (make run, or snakemake --directory {run_folder})"
        )
    return Run.from_dict(json.loads(path.read_text(encoding="utf-8"))["run"])


# ---- the contest preset -----------------------------------------------------------------

CONTEST_COLLECTIONS = {
    "t2i_gallery": {"images": "附件2/ImageData"},
    "t2i_queries": {"texts": "附件2/word_test.csv", "id_column": "text_id"},
    "i2t_images": {"images": "附件3/ImageData"},
    "i2t_gallery": {"texts": "附件3/word_data.csv", "id_column": "text_id"},
}
CONTEST_TASKS = {
    "t2i": {
        "queries": "t2i_queries",
        "gallery": "t2i_gallery",
        "table": "result1.csv",
        "columns": ["text_id", "similarity_ranking", "result_image_id"],
    },
    "i2t": {
        "queries": "i2t_images",
        "gallery": "i2t_gallery",
        "table": "result2.csv",
        "columns": ["image_id", "similarity_ranking", "result_text_id"],
        "query_list": {"file": "附件3/image_test.csv", "id_column": "image_id"},
    },
}
CONTEST_TRAINING = {"pairs": "附件1/ImageWordData.csv", "images": "附件1/ImageData"}
CONTEST_GROUND_TRUTH = "ground_truth.csv"  # text_id,image_id, beside the three folders


def contest_files() -> dict[str, str]:
    """Give every file and folder of the contest layout, by what it is (relative to data_root)."""
    files = {name: next(iter(spec.values())) for name, spec in CONTEST_COLLECTIONS.items()}
    files["i2t_query_list"] = CONTEST_TASKS["i2t"]["query_list"]["file"]
    files["train_pairs"] = CONTEST_TRAINING["pairs"]
    files["train_images"] = CONTEST_TRAINING["images"]
    files["ground_truth"] = CONTEST_GROUND_TRUTH
    return files


# ---- declaring the run ------------------------------------------------------------------


def data_folder(data_root: str) -> str:
    """Give the folder a `data_root` setting names ("demo": the embedded demo's, relative to the run)."""
    return demo_data() if data_root == "demo" else os.path.expanduser(data_root)


def declare_run(config: dict, check_files: bool = True) -> Run:
    """Give the run the config declares, checked; a `RunError` names the key and the fix.

    With `check_files`, every folder, file and column is looked at now (a stat and a
    header), so that a typo stops the run before any job; the demo's files are made by
    the run and are not checked.
    """
    demo = config["data_root"] == "demo"
    preset = config.get("preset", CONTEST)
    root = data_folder(config["data_root"])
    if preset == NONE and demo:
        raise RunError(
            "data_root: demo is the contest preset's demo; with preset: none set data_root to your "
            "folder (--config data_root=/path/to/folder)"
        )
    declared_collections = dict(config.get("collections") or {})
    declared_tasks = dict(config.get("tasks") or {})
    training = dict(config.get("training") or {})
    if preset == CONTEST:
        for key, preset_items in (("collections", CONTEST_COLLECTIONS), ("tasks", CONTEST_TASKS)):
            given = declared_collections if key == "collections" else declared_tasks
            taken = sorted(set(given) & set(preset_items))
            if taken:
                raise RunError(
                    f"{key}.{taken[0]} is a name of the contest preset; choose another name, "
                    "or set preset: none and declare the whole run"
                )
        if check_files and not demo:
            _check_contest_layout(root)
        declared_collections = {**CONTEST_COLLECTIONS, **declared_collections}
        declared_tasks = {**CONTEST_TASKS, **declared_tasks}
        training = {**CONTEST_TRAINING, **{k: v for k, v in training.items() if v}}
    check = check_files and not demo

    collections = {name: _collection(name, spec, root, check) for name, spec in declared_collections.items()}
    trains = bool(training.get("pairs"))
    if trains:
        collections.update(_training_collections(training, root, check))
    elif training.get("images"):
        raise RunError("training.images is set but training.pairs is not; name the pairs table, or drop both")

    ground_truth = config.get("ground_truth", "auto")
    tasks = {
        name: _task(name, spec, collections, root, check, preset, ground_truth)
        for name, spec in declared_tasks.items()
    }
    if not any(c.source for c in collections.values()):
        raise RunError(
            "the run declares no collection: add one under collections (e.g. "
            "collections: {photos: {images: .}}), or use preset: contest"
        )
    validation = _validation_tasks() if trains else {}
    if trains:
        collections[VAL_IMAGES] = Collection(VAL_IMAGES, IMAGES, None)
        collections[VAL_TEXTS] = Collection(VAL_TEXTS, TEXTS, None)
    return Run(root, demo, collections, tasks, trains, validation)


def _check_contest_layout(root: str) -> None:
    wanted = [path for what, path in contest_files().items() if what != "ground_truth"]
    missing = [path for path in wanted if not os.path.exists(os.path.join(root, path))]
    if missing:
        raise RunError(
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
        raise RunError(f"{key}: the name {name!r} may use only letters, digits, '_' and '-'")


def _collection(name: str, spec: dict, root: str, check: bool) -> Collection:
    key = f"collections.{name}"
    _check_name(key, name)
    if name in RESERVED:
        raise RunError(f"{key}: {name} is made by the run itself (training, validation); choose another name")
    if not isinstance(spec, dict) or ("images" in spec) == ("texts" in spec):
        raise RunError(
            f"{key}: give either images: FOLDER or texts: FILE (with id_column and caption_column)"
        )
    unknown = sorted(set(spec) - {"images", "texts", "id_column", "caption_column"})
    if unknown:
        raise RunError(
            f"{key}.{unknown[0]}: not a key of a collection (images, texts, id_column, caption_column)"
        )
    if "images" in spec:
        folder = _resolve(root, spec["images"])
        if check:
            _check_image_folder(f"{key}.images", folder)
        return Collection(name, IMAGES, folder)
    path = _resolve(root, spec["texts"])
    id_column, caption_column = spec.get("id_column", "text_id"), spec.get("caption_column", "caption")
    if check:
        check_table(f"{key}.texts", path, [id_column, caption_column])
    return Collection(name, TEXTS, path, id_column, caption_column)


def _training_collections(training: dict, root: str, check: bool) -> dict[str, Collection]:
    if not training.get("images"):
        raise RunError("training.images: name the folder that the pairs' image column is resolved against")
    folder = _resolve(root, training["images"])
    pairs = _resolve(root, training["pairs"])
    image_column = training.get("image_column") or "image_id"
    caption_column = training.get("caption_column") or "caption"
    if check:
        _check_image_folder("training.images", folder)
        check_table("training.pairs", pairs, [image_column, caption_column])
    return {
        TRAIN_IMAGES: Collection(TRAIN_IMAGES, IMAGES, folder),
        TRAIN_TEXTS: Collection(TRAIN_TEXTS, TEXTS, pairs, image_column, caption_column, TRAIN_IMAGES),
    }


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
        raise RunError(
            f"{key}.{unknown[0]}: not a key of a task "
            "(queries, gallery, k, table, columns, query_list, ground_truth)"
        )
    for side in ("queries", "gallery"):
        if spec.get(side) not in collections or spec.get(side) in RESERVED:
            known = ", ".join(n for n in collections if n not in RESERVED) or "(none)"
            raise RunError(
                f"{key}.{side}: {spec.get(side)!r} is not a declared collection (collections: {known})"
            )
    queries, gallery = collections[spec["queries"]], collections[spec["gallery"]]
    if queries.kind == gallery.kind:
        raise RunError(
            f"{key}: queries {queries.name} and gallery {gallery.name} both hold {queries.kind}; a task "
            "ranks one kind against the other (captions against images, or images against captions)"
        )
    k = int(spec.get("k", 5))
    if k < 1:
        raise RunError(f"{key}.k: {k} hits per query; give at least 1")
    columns = tuple(spec.get("columns") or DEFAULT_TABLE_COLUMNS)
    if len(columns) != 3 or len(set(columns)) != 3:
        raise RunError(
            f"{key}.columns: give three different names (query id, rank, result id), not {list(columns)}"
        )
    table = str(spec.get("table") or "")
    if table and (os.path.basename(table) != table or not table.endswith(".csv")):
        raise RunError(
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
    return Task(name, queries.name, gallery.name, queries.kind, k, table, columns, query_list, truth)


def _ground_truth(
    key: str, spec: dict, queries: Collection, root: str, check: bool, preset: str, setting: str
) -> GroundTruth | None:
    given = spec.get("ground_truth")
    if given:
        truth = GroundTruth(
            _resolve(root, given["file"]),
            given.get("query_column", "query_id"),
            given.get("gallery_column", "gallery_id"),
        )
        if check:
            check_table(f"{key}.ground_truth.file", truth.file, [truth.query_column, truth.gallery_column])
        return truth
    if preset != CONTEST or not setting:
        return None
    file = _resolve(root, CONTEST_GROUND_TRUTH) if setting == "auto" else os.path.expanduser(setting)
    if setting == "auto" and check and not os.path.isfile(file):
        return None
    return contest_ground_truth(file, queries.kind)


def contest_ground_truth(file: str, query_kind: str) -> GroundTruth:
    """Give the contest's ground truth (`text_id,image_id` pairs) for a task whose queries
    are of `query_kind`: the columns follow the queries."""
    columns = ("text_id", "image_id") if query_kind == TEXTS else ("image_id", "text_id")
    return GroundTruth(file, *columns)


def _validation_tasks() -> dict[str, Task]:
    """Fusion's validation task: the training pairs held out, both directions."""
    return {
        "t2i": Task("t2i", VAL_TEXTS, VAL_IMAGES, TEXTS),
        "i2t": Task("i2t", VAL_IMAGES, VAL_TEXTS, IMAGES),
    }


def _check_image_folder(key: str, folder: str) -> None:
    from tuwen.files.folders import has_image_file

    if not os.path.isdir(folder):
        raise RunError(f"{key}: {folder} is not a folder; point it at a folder of images")
    if not has_image_file(folder):
        raise RunError(f"{key}: {folder} holds no image file (searched recursively); nothing to search")


def check_table(key: str, path: str, columns: list[str]) -> None:
    """Check that a table file exists, has a format tuwen reads, the columns, and a row."""
    from tuwen.files.records import TABLE_SUFFIXES, table_header

    if Path(path).suffix.lower() not in TABLE_SUFFIXES:
        raise RunError(f"{key}: {path} is not a CSV, TSV, JSON Lines or Parquet file (by its name's ending)")
    if not os.path.isfile(path):
        raise RunError(f"{key}: {path} does not exist")
    found, has_rows = table_header(path)
    missing = [c for c in columns if c not in found]
    if missing:
        raise RunError(
            f"{key}: {path} has no column {missing[0]!r} (columns: {', '.join(found) or '(none)'}); "
            "name its columns in the config"
        )
    if not has_rows:
        raise RunError(f"{key}: {path} has a header but no rows; nothing to read")
