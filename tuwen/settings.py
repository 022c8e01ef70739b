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
"""

from __future__ import annotations

import json
import os
from typing import Any

# The result settings of each group, as dotted config keys; a key may feed several groups.
SETTINGS_GROUPS: dict[str, tuple[str, ...]] = {
    "demo": ("demo.train_pairs", "demo.queries", "seed"),
    "ingest": ("data_root", "ingest.max_image_pixels", "ingest.verify_decode"),
    # One file per model (model.<name>.json, train.<name>.json): see MODEL_GROUPS.
    "model": ("models",),
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
    # Which models rank (training on or off) and how many hits are kept.
    "retrieval": ("retrieval.keep_top", "fusion.enabled", "train.enabled", "models"),
    "fusion": (
        "fusion.enabled",
        "fusion.ocr",
        "fusion.weights",
        "fusion.temperatures",
        "fusion.chance_alpha",
        "fusion.validation_ratio",
        "train.enabled",
        "models",
    ),
    "figures": ("figures.queries_per_task", "seed"),
    "browse": ("browse.thumbnail_size",),
    "ground_truth": ("ground_truth",),
}
# Groups recorded once per model, with that model's own values (its name and checkpoint,
# its train section with its overrides): one model's change reruns that model alone.
MODEL_GROUPS = ("model", "train")


def group_name(group: str, model: str | None = None) -> str:
    """Give the name of a group's settings file: `train.ViT-H-14` for a model's group."""
    return f"{group}.{model}" if model else group


def config_value(config: dict, dotted: str) -> Any:
    """Give the value of a dotted key (`train.epochs`) in a config."""
    value: Any = config
    for part in dotted.split("."):
        value = value[part]
    return value


def group_settings(config: dict, name: str) -> dict:
    """Give the settings of a group file (`retrieval`, or `train.<model>` for a model's group),
    nested as in the config (`{"train": {"epochs": 20}}`)."""
    group, _, model_name = name.partition(".")
    settings: dict = {}
    for dotted in SETTINGS_GROUPS[group]:
        *sections, key = dotted.split(".")
        place = settings
        for section in sections:
            place = place.setdefault(section, {})
        place[key] = config_value(config, dotted)
    if group in MODEL_GROUPS:
        from tuwen.layout import run_models

        model = next(m for m in run_models(config) if m.name == model_name)
        del settings["models"]
        settings["model"] = {"name": model.name, "checkpoint": model.checkpoint}
        if group == "train":
            settings["train"] = {key: model.train[key] for key in settings["train"]}
    return settings


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
