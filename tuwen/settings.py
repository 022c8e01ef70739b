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
    "model": ("model", "checkpoint"),
    "encode_images": ("encode.jpeg_draft", "encode.gpu_jpeg_decode", "ingest.max_image_pixels"),
    "train": (
        "train.run",
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
    "ocr": ("ingest.max_image_pixels",),
    # Which model ranks (training on or off, and the run's name) and how many hits are kept.
    "retrieval": ("retrieval.keep_top", "fusion.enabled", "train.enabled", "train.run"),
    "fusion": (
        "fusion.ocr",
        "fusion.weights",
        "fusion.temperatures",
        "fusion.validation_ratio",
        "train.enabled",
        "train.run",
    ),
    "figures": ("figures.queries_per_task", "seed"),
    "browse": ("browse.thumbnail_size",),
    "ground_truth": ("ground_truth",),
}


def config_value(config: dict, dotted: str) -> Any:
    """Give the value of a dotted key (`train.epochs`) in a config."""
    value: Any = config
    for part in dotted.split("."):
        value = value[part]
    return value


def group_settings(config: dict, group: str) -> dict:
    """Give a group's settings from the config, nested as in the config (`{"train": {"epochs": 20}}`)."""
    settings: dict = {}
    for dotted in SETTINGS_GROUPS[group]:
        *sections, key = dotted.split(".")
        place = settings
        for section in sections:
            place = place.setdefault(section, {})
        place[key] = config_value(config, dotted)
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
