# The config, its validation and the run's constants. What the run reads and asks (its
# collections, tasks, training pairs) is declared in the config and resolved by tuwen/run.py;
# every path under results/ comes from tuwen/layout.py, the settings groups from
# tuwen/settings.py. Each stage's input functions sit at the top of its own rules file.
# Parse-time code stays cheap (it re-runs inside every cluster job): stat calls and headers.

import json
import math
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from tuwen.run import layout  # torch-free, cheap
from tuwen.run import plans  # the plans of paths the stages' jobs read
from tuwen.run.schema import coerce_config, load_schema
from tuwen.run.declaration import (
    TRAIN_IMAGES,
    TRAIN_TEXTS,
    VAL_IMAGES,
    VAL_TEXTS,
    RunError,
    declare_run,
)
from tuwen.run.settings import (
    PER_ITEM_GROUPS,
    SETTINGS_GROUPS,
    group_name,
    group_settings,
    settings_text,
)

CONFIG_SCHEMA = load_schema(os.path.join(workflow.basedir, "config.schema.yaml"))
RENAMED_KEYS = {
    "model": "models: [NAME, ...]",
    "checkpoint": "models: [{name: NAME, checkpoint: PATH}]",
}
for _key, _new in RENAMED_KEYS.items():
    if _key in config:
        raise WorkflowError(
            f"config key {_key!r} is now part of `models`: write {_new} (see config.yaml)"
        )
if "run" in config.get("train", {}):
    raise WorkflowError(
        "config key train.run is gone: each model's fine-tuning is in results/models/<name>/finetune"
    )
# Nested --config values arrive as strings; the schema says what each one is.
coerce_config(config, CONFIG_SCHEMA)
validate(config, workflow.source_path("../config.schema.yaml"))

try:
    RUN = declare_run(config)
    MODELS = layout.run_models(config, RUN.trains)
except (RunError, ValueError) as error:
    raise WorkflowError(str(error))
COLLECTIONS = RUN.collections
TASKS = RUN.tasks
MODEL_BY_NAME = {model.name: model for model in MODELS}
TRAINED = [model for model in MODELS if model.trains]

FUSION = config["fusion"]
# The tables rank by a combination chosen on validation when fusion is on, or when several
# models rank; one model with fusion off ranks by its cosine (the plain search).
FUSE = FUSION["enabled"] or len(MODELS) > 1
USE_OCR = FUSION["enabled"] and FUSION["ocr"]
# Sentence encoders match captions with the text OCR reads in the images: only with OCR.
TEXT_ENCODERS = FUSION["text_encoders"] if USE_OCR else []
if FUSE and not RUN.trains:
    raise WorkflowError(
        "fusion (fusion.enabled, or several models) is chosen on held-out training pairs, and "
        "this run declares none: add training (pairs and images), or use one model with fusion off"
    )


def kind_of(name):
    return COLLECTIONS[name].kind


def manifest(name):
    return layout.manifest(name, kind_of(name))


# ---- settings ----------------------------------------------------------------
# A setting that changes results reaches its jobs as the input settings_file(group), and
# never as a param of theirs (tuwen/settings.py says why, and lists the groups).


def settings_file(group, item=None):
    return layout.settings(group_name(group, item))


def settings_of(wildcards):
    return settings_text(group_settings(config, wildcards.group, RUN))


def settings_group_pattern():
    shared = [g for g in SETTINGS_GROUPS if g not in PER_ITEM_GROUPS]
    per_item = "|".join(PER_ITEM_GROUPS)
    return "|".join(shared) + rf"|(?:{per_item})\.[A-Za-z0-9_-]+"


# ---- how big the jobs are ----------------------------------------------------

SHARD_SIZE = {
    layout.IMAGES: config["shards"]["size"],
    layout.TEXTS: config["shards"]["text_size"],
}
# Threads of an encode job (torch's and the decode workers'). Locally
# Snakemake caps them at --cores; on a cluster each such job asks for this many CPUs
# (a profile's set-threads changes it).
HEAVY_JOB_THREADS = 8
# Image ingest takes half the cores: on a small machine the model-card jobs and caption
# ingest that start beside it would otherwise wait for it before the first encode job.
INGEST_THREADS = max(1, min(HEAVY_JOB_THREADS, (workflow.cores or 2) // 2))


def shard_runtime(kind, seconds_per_item):
    """Minutes a scheduler should allow a job over one full shard: start-up plus a generous
    time per item (encoding: 0.1 s an image, ViT-H-14 on a modest GPU, 0.01 s a caption;
    OCR: 1 s an image on one CPU core, 0.85 s measured on 2)."""
    return 10 + math.ceil(SHARD_SIZE[kind] * seconds_per_item / 60)


# ---- the run's targets -------------------------------------------------------
# Each stage's rules file says what it contributes (its *_targets function).


def final_outputs():
    return (
        decision_files()
        + ingest_targets()
        + retrieval_targets()
        + index_targets()
        + training_targets()
        + fusion_targets()
        + report_targets()
    )


def print_closing_summary():
    """What the user wants to know when the run ends: tables, recall, what was left out."""
    from tuwen.report.summary import run_summary

    print(run_summary(declared=RUN), flush=True)
