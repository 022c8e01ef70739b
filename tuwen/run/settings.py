"""Which settings each stage's results depend on, and how they reach its jobs (torch-free).

Snakemake checks a job's params only once it knows the job's final inputs, and for a job
whose inputs pass through a checkpoint (every encode, search and fusion job here) it
skips that check on a finished run. So a setting that can change results reaches its
jobs as a file: the `record_settings` rule writes each group below to
results/settings/{group}.json (that small job has no inputs, so its params are always
checked), and every job that uses the group declares the file as an input. When a value
changes, the file is rewritten, and the jobs that read it rerun on every path,
checkpoints included; when none changes, the file is left as it is.

Keys the schema marks `x-speed-only` (they change how fast, never what) or
`x-reruns-nothing` (they place files, ask a scheduler for resources, or apply only to
what is made later) belong to no group: jobs read them from the config.

Groups that are recorded once per item (a model, a declared collection, a task) hold
that item's part alone, so changing one collection's declaration re-ingests that
collection and not the others; the run's declaration as a whole is recorded too
(run.json), for the readers of a finished run (the CLI, the server, the summary).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

from tuwen.run.declaration import Run

TRAINING_KEYS = (
    "training.pairs",
    "training.images",
    "training.image_column",
    "training.caption_column",
    "training.validation_pairs",
    "training.validation_images",
)
# The result settings of each group, as dotted config keys; a key may feed several groups.
SETTINGS_GROUPS: dict[str, tuple[str, ...]] = {
    "demo": ("demo.train_pairs", "demo.queries", "seed"),
    "ingest": ("ingest.max_image_pixels", "ingest.verify_decode"),
    # One file per collection (collection.<name>.json): where it is read from, and how.
    "collection": ("data_root", "preset", "collections", *TRAINING_KEYS),
    # One file per task (task.<name>.json): its collections, k, result table and query list.
    "task": ("data_root", "preset", "collections", "tasks"),
    # Each task's ground truth, read by evaluation and the page.
    "ground_truth": ("data_root", "preset", "tasks", "ground_truth"),
    # The whole declared run, for the readers of a finished run; no job reads it.
    "run": (
        "data_root",
        "preset",
        "collections",
        "tasks",
        "ground_truth",
        *TRAINING_KEYS,
        "models",
        "train.enabled",
        "fusion.enabled",
        "fusion.ocr",
        "fusion.text_encoders",
        "index.enabled",
        "keywords.enabled",
    ),
    # One file per model (model.<name>.json, train.<name>.json): see MODEL_GROUPS.
    "model": ("models", "encode.int8"),
    "encode_images": ("encode.jpeg_draft", "encode.gpu_jpeg_decode", "ingest.max_image_pixels"),
    "train": (
        "models",
        "train.epochs",
        "train.batch_size",
        "train.accum_steps",
        "train.lr",
        "train.weight_decay",
        "train.warmup_steps",
        "train.val_fraction",
        "train.lock_image",
        "train.grad_checkpointing",
        "train.precision",
        "seed",
    ),
    "validation": ("train.val_fraction", "fusion.validation_max_pairs"),
    "ocr": ("ingest.max_image_pixels", "fusion.ocr_detect_side", "fusion.ocr_angle_classifier"),
    # Which sentence encoders embed captions and the images' OCR text (text:<encoder> channels).
    "sentences": ("fusion.text_encoders",),
    # Which models rank (training on or off) and how many hits are kept.
    "retrieval": ("retrieval.keep_top", "fusion.enabled", "train.enabled", "models"),
    "fusion": (
        "fusion.enabled",
        "fusion.ocr",
        "fusion.weights",
        "fusion.temperatures",
        "fusion.chance_alpha",
        "fusion.validation_ratio",
        "fusion.text_encoders",
        "train.enabled",
        "models",
    ),
    # The approximate index: its training (lists), and how it is searched and grown (its
    # description records the lists too, so that it says what it was trained with).
    "index": ("index.lists", "index.codes", "index.retrain_growth"),
    "index_search": (
        "index.lists",
        "index.codes",
        "index.min_items",
        "index.nprobe",
        "index.cross_modal_nprobe",
        "index.candidates",
        "index.rescored",
        "index.retrain_growth",
        "index.retrain_drift",
        "index.segment_base",
    ),
    "figures": ("figures.queries_per_task", "seed"),
    # Zero-shot beside fine-tuned (results/eval/results.md): which weights rank the test tasks.
    "results_table": ("evaluate.zero_shot_test",),
    "duplicates": ("duplicates.max_hash_distance",),
    # Zero-shot tags: the labels file, its prompts, how many are kept. (The file itself is the
    # tagging job's input, so a new data_root, which moves a relative one, reruns it too.)
    "tags": ("tags.labels", "tags.templates", "tags.top"),
    "browse": ("browse.thumbnail_size",),
}
# Groups recorded once per model, with that model's own values (its name and checkpoint,
# its train section with its overrides): one model's change reruns that model alone.
MODEL_GROUPS = ("model", "train")
# Groups recorded once per declared collection or task, and the whole run: their
# content is the run tuwen.run.declaration resolves from the keys above.
RUN_GROUPS = ("collection", "task", "ground_truth", "run")
PER_ITEM_GROUPS = (*MODEL_GROUPS, "collection", "task")


def group_name(group: str, model: str | None = None) -> str:
    """Give the name of a group's settings file: `train.ViT-H-14` for a model's group."""
    return f"{group}.{model}" if model else group


def config_value(config: dict, dotted: str) -> Any:
    """Give the value of a dotted key (`train.epochs`) in a config."""
    value: Any = config
    for part in dotted.split("."):
        value = value[part]
    return value


def group_settings(config: dict, name: str, run: Run) -> dict:
    """Give the settings of a group file (`retrieval`, or `train.<model>` for a model's group),
    nested as in the config (`{"train": {"epochs": 20}}`); `run` is the declared run, which
    the groups of a model, a collection, a task and the run itself are made from."""
    group, _, item = name.partition(".")
    if group in RUN_GROUPS:
        return _run_group(group, item, run)
    settings: dict = {}
    for dotted in SETTINGS_GROUPS[group]:
        *sections, key = dotted.split(".")
        place = settings
        for section in sections:
            place = place.setdefault(section, {})
        place[key] = config_value(config, dotted)
    if group in MODEL_GROUPS:
        model = run.model(item)
        del settings["models"]
        settings["model"] = {"name": model.name, "checkpoint": model.checkpoint}
        if group == "train":
            settings["train"] = {key: model.train[key] for key in settings["train"]}
    return settings


def _run_group(group: str, item: str, run: Run) -> dict:
    from tuwen.files.containers import FOLDER, PARQUET, WEBDATASET, source_stamp
    from tuwen.files.folders import folder_stamp

    if group == "collection":
        collection = run.collections[item]
        described = asdict(collection)
        # A folder's files are seen through its folders' times: a photo added anywhere under it
        # rewrites this file, and the collection is read again (unchanged files are not).
        if not collection.source or run.demo:
            return {"collection": described}
        if collection.holds_images and collection.format == FOLDER:
            described["folder_stamp"] = folder_stamp(collection.source)
        elif collection.holds_images:  # containers: each one's name, size and time
            described["source_stamp"] = source_stamp(collection.source, collection.format)
        elif os.path.isdir(collection.source):  # captions in tar shards or parquet files
            described["source_stamp"] = source_stamp(collection.source, WEBDATASET) + source_stamp(
                collection.source, PARQUET
            )
        return {"collection": described}
    if group == "task":
        task = asdict(run.tasks[item])
        del task["ground_truth"]
        return {"task": task}
    if group == "ground_truth":
        return {"ground_truth": {n: asdict(t.ground_truth) for n, t in run.tasks.items() if t.ground_truth}}
    return {"run": run.to_dict()}


def used_groups(run: Run, browse: bool, duplicates: bool = False, tags: bool = False) -> list[str]:
    """Give the settings files the run's stages read (`browse`: the browse page is made;
    `duplicates`: duplicates are found; `tags`: photos are tagged)."""
    groups = ["run", "ingest", "encode_images", "retrieval", "figures"]
    groups += [group_name("collection", n) for n, c in run.collections.items() if c.source]
    groups += [group_name("task", name) for name in run.tasks]
    groups += [group_name("model", model.name) for model in run.models]
    groups += [group_name("train", model.name) for model in run.trained_models]
    groups += ["demo"] if run.demo else []
    groups += ["validation", "fusion"] if run.fuse else []
    groups += ["ocr"] if run.reads_text else []
    groups += ["sentences"] if run.text_encoders else []
    groups += ["browse"] if browse else []
    groups += ["duplicates"] if duplicates else []
    groups += ["tags"] if tags else []
    groups += ["ground_truth", "results_table"] if run.judged_tasks() else []
    groups += ["index_search"] if run.indexed_galleries() else []
    return list(dict.fromkeys(groups))


def group_pattern() -> str:
    """Give the regular expression of every settings file's name (`record_settings`' wildcard)."""
    shared = [g for g in SETTINGS_GROUPS if g not in PER_ITEM_GROUPS]
    per_item = "|".join(PER_ITEM_GROUPS)
    return "|".join(shared) + rf"|(?:{per_item})\.[A-Za-z0-9_-]+"


def settings_text(settings: dict) -> str:
    """Give a group's settings as JSON, keys sorted, so that equal settings give equal text."""
    return json.dumps(settings, indent=2, sort_keys=True, ensure_ascii=False)


def read_settings(path: str | os.PathLike) -> dict:
    """Give the settings a job was given (written by `write_settings`)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def grouped_keys() -> set[str]:
    """Give every dotted key that belongs to some group."""
    return {key for keys in SETTINGS_GROUPS.values() for key in keys}


def hits_kept(retrieval: dict, task: dict) -> int:
    """Give how many hits a task's search keeps per query: retrieval.keep_top, or more
    where the task's result table has more rows per query (its k)."""
    return max(retrieval["retrieval"]["keep_top"], task["task"]["k"])
