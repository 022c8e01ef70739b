# Config validation, and the input functions of every stage. What a run is (collections,
# tasks, models, every path under results/) comes from tuwen/layout.py, the settings
# groups from tuwen/settings.py. Parse-time code stays cheap (it re-runs inside every
# cluster job): a few stat calls.

import json
import math
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import tuwen.layout as layout  # torch-free, cheap
from tuwen.architectures import SMALL_ARCHITECTURES
from tuwen.config import coerce_config, load_schema
from tuwen.settings import (
    MODEL_GROUPS,
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

DEMO = config["data_root"] == "demo"
DATA_ROOT = layout.data_folder(config["data_root"])
COLLECTIONS = layout.COLLECTIONS
TASKS = layout.TASKS
VALIDATION_TASKS = layout.VALIDATION_TASKS
IMAGE_FOLDERS = layout.of_kind(layout.IMAGES, from_data=True)
TEXT_SETS = layout.of_kind(layout.TEXTS, from_data=True)
QUERY_LIST_TASKS = [name for name, task in TASKS.items() if task.query_list]

try:
    MODELS = layout.run_models(config)
except ValueError as error:
    raise WorkflowError(str(error))
MODEL_BY_NAME = {model.name: model for model in MODELS}
TRAINED = [model for model in MODELS if model.trains]

FUSION = config["fusion"]
# The tables rank by a combination chosen on validation when fusion is on, or when several
# models rank; one model with fusion off ranks by its cosine (the plain search).
FUSE = FUSION["enabled"] or len(MODELS) > 1
USE_OCR = FUSION["enabled"] and FUSION["ocr"]


def _check_data_root():
    if DEMO:
        return
    wanted = [COLLECTIONS[name].source for name in IMAGE_FOLDERS + TEXT_SETS]
    wanted += [task.query_list for task in TASKS.values() if task.query_list]
    missing = [p for p in wanted if not os.path.exists(os.path.join(DATA_ROOT, p))]
    if missing:
        raise WorkflowError(
            f"data_root {DATA_ROOT!r} does not hold the contest layout; missing: "
            + ", ".join(missing)
            + ". Point data_root at the folder that contains 附件1, 附件2 and 附件3."
        )


_check_data_root()


def data_path(relative):
    return os.path.join(DATA_ROOT, relative)


def ground_truth_path():
    """The ground-truth CSV, or None when there is none to evaluate against."""
    path = layout.ground_truth_file(config["ground_truth"], config["data_root"])
    if config["ground_truth"] == "auto" and not (DEMO or os.path.exists(path)):
        return None
    return path


def ground_truth_input(wildcards):
    return ground_truth_path() or []


def query_id_column(wildcards):
    return COLLECTIONS[TASKS[wildcards.task].queries].id_column


def table_columns(wildcards):
    return list(TASKS[task_of_table(wildcards)].columns)


# ---- settings ----------------------------------------------------------------
# A setting that changes results reaches its jobs as the input settings_file(group), and
# never as a param of theirs (tuwen/settings.py says why, and lists the groups).


def settings_file(group, model=None):
    return layout.settings(group_name(group, model))


def settings_of(wildcards):
    return settings_text(group_settings(config, wildcards.group))


def settings_group_pattern():
    shared = [g for g in SETTINGS_GROUPS if g not in MODEL_GROUPS]
    per_model = "|".join(MODEL_GROUPS)
    return "|".join(shared) + rf"|(?:{per_model})\.[A-Za-z0-9_-]+"


def demo_root(wildcards, output):
    return os.path.dirname(os.path.dirname(output.train_pairs))


# ---- ingest ------------------------------------------------------------------


def image_folder(wildcards):
    return data_path(COLLECTIONS[wildcards.col].source)


def always_verify_decode(wildcards):
    """Decode this folder's images at ingest whatever ingest.verify_decode says? The training
    folder's: training reads its images every epoch and cannot drop a pair mid-run, so a bad
    file must be rejected first.
    """
    return wildcards.col == "train_images"


def text_set_inputs(wildcards):
    inputs = {"csv": data_path(COLLECTIONS[wildcards.tset].source)}
    if wildcards.tset in layout.PAIRED_FOLDER:
        inputs["images"] = layout.manifest(layout.PAIRED_FOLDER[wildcards.tset])
    return inputs


def text_id_column(wildcards):
    return COLLECTIONS[wildcards.tset].id_column


def query_list_inputs(wildcards):
    task = TASKS[wildcards.task]
    return {
        "csv": data_path(task.query_list),
        "collection": layout.manifest(task.queries),
    }


def manifest_of(wildcards):
    return layout.manifest(wildcards.name)


# ---- models ------------------------------------------------------------------


def base_checkpoint(model):
    """The checkpoint file a model's base weights are read from; [] when cn_clip fetches
    released weights."""
    if model.checkpoint:
        return os.path.expanduser(model.checkpoint)
    if model.name in SMALL_ARCHITECTURES:
        return layout.init_checkpoint(model.name, config["seed"])
    return []


def model_checkpoint(wildcards):
    model = MODEL_BY_NAME[wildcards.model]
    if wildcards.stage == layout.BASE:
        return base_checkpoint(model)
    return layout.fine_tuned(model.name, "checkpoint.pt")


def model_card_settings(wildcards):
    return settings_file("model", wildcards.model)


def card_of(model, stage=None):
    return layout.model_card(model.name, stage or model.retrieval_stage)


# Rules that depend on a model's tag also list its card as a plain input: that puts the
# describe_model checkpoint in the DAG from the start, so Snakemake resolves it before it
# builds jobs (such as a new shard's) whose input functions ask for the tag.
RANKING_CARD = card_of(MODELS[0])


def model_tag(model, stage=None):
    stage = stage or model.retrieval_stage
    card = checkpoints.describe_model.get(model=model.name, stage=stage).output.card
    with open(card, encoding="utf-8") as handle:
        return json.load(handle)["tag"]


def all_cards():
    return [card_of(model, stage) for model in MODELS for stage in model.stages]


def card_for_tag(wildcards):
    """The model card whose tag names the features asked for.

    Cards already written are read directly; if none matches (features asked for before
    any card exists), the checkpoint API makes Snakemake describe the models first.
    """
    for path in all_cards():
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                if json.load(handle)["tag"] == wildcards.tag:
                    return path
    for model in MODELS:
        for stage in model.stages:
            if model_tag(model, stage) == wildcards.tag:
                return card_of(model, stage)
    raise WorkflowError(
        f"features of model {wildcards.tag} were asked for, but no configured model has that tag; "
        "features of different models are never mixed"
    )


# ---- shards and features -----------------------------------------------------

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


def shard_size_key(wildcards):
    """Which key of `shards` sizes this collection's new shards (read in the job: a size
    applies to shards made from then on, so changing it reruns nothing)."""
    holds_images = COLLECTIONS[wildcards.name].holds_images
    return "size" if holds_images else "text_size"


def collection_kind(wildcards):
    return COLLECTIONS[wildcards.name].kind


def shard_runtime(kind, seconds_per_item):
    """Minutes a scheduler should allow a job over one full shard: start-up plus a generous
    time per item (encoding: 0.1 s an image, ViT-H-14 on a modest GPU, 0.01 s a caption;
    OCR: 1 s an image on one CPU core, 0.85 s measured on 2)."""
    return 10 + math.ceil(SHARD_SIZE[kind] * seconds_per_item / 60)


def shards_of(name):
    """Active shards of a collection, from its registry checkpoint."""
    import pandas as pd

    assignment = checkpoints.assign_shards.get(name=name).output["assignment"]
    return sorted(set(pd.read_parquet(assignment, columns=["shard"])["shard"]))


def shard_list(wildcards):
    """A shard's item list; written by the registry checkpoint, never by a rule of its own."""
    name = getattr(wildcards, "col", None) or wildcards.tset
    checkpoints.assign_shards.get(name=name)
    return layout.shard_list(name, wildcards.shard)


def features_of(name, model, stage=None):
    tag = model_tag(model, stage)
    return [layout.features(tag, name, shard) for shard in shards_of(name)]


def ocr_of(name):
    return [layout.ocr(name, shard) for shard in shards_of(name)]


# ---- retrieval ---------------------------------------------------------------


def query_features(wildcards):
    task = TASKS[wildcards.task]
    return features_of(task.queries, MODELS[0])


def query_order(wildcards):
    return layout.query_order(TASKS[wildcards.task])


def query_assignment(wildcards):
    return layout.assignment(TASKS[wildcards.task].queries)


def gallery_assignment(wildcards):
    return layout.assignment(TASKS[wildcards.task].gallery)


def gallery_features(wildcards):
    return features_of(TASKS[wildcards.task].gallery, MODELS[0])


def task_of_table(wildcards):
    return next(name for name, task in TASKS.items() if task.table == wildcards.table)


def topk_of_table(wildcards):
    return layout.topk(task_of_table(wildcards))


# ---- figures and evaluation --------------------------------------------------


def query_kind(wildcards):
    return TASKS[wildcards.task].query_kind


def figure_inputs(wildcards):
    task = TASKS[wildcards.task]
    return {
        "topk": layout.topk(task.name),
        "captions": layout.manifest(layout.text_side(task)),
        "images": layout.manifest(layout.image_side(task)),
    }


FIGURE_COUNT = config["figures"]["queries_per_task"]


def figure_files(task):
    return [layout.figure(task, f"query_{i}.png") for i in range(FIGURE_COUNT)]


def encoded_collections():
    """Collections this run encodes: those retrieval searches (training adds its own)."""
    return [name for task in TASKS.values() for name in (task.queries, task.gallery)]


def plan_files(plan):
    """Every file named in a plan (a job's params that say which file is what), for the
    job's input: the strings that are paths."""
    if isinstance(plan, dict):
        return [f for value in plan.values() for f in plan_files(value)]
    if isinstance(plan, list):
        return [f for value in plan for f in plan_files(value)]
    return [plan] if isinstance(plan, str) and "/" in plan else []


def accounting_plan(wildcards):
    """What account_inputs reads, collection by collection and task by task."""
    encoded = encoded_collections()
    return {
        "collections": {
            name: {
                "manifest": layout.manifest(name),
                "id_column": COLLECTIONS[name].id_column,
                "features": features_of(name, MODELS[0]) if name in encoded else None,
            }
            for name in IMAGE_FOLDERS + TEXT_SETS
        },
        "tasks": {
            name: {
                "order": layout.query_order(task),
                "id_column": COLLECTIONS[task.queries].id_column,
                "topk": layout.topk(name),
                "unencoded": layout.retrieval(name, "unencoded_queries.csv"),
            }
            for name, task in TASKS.items()
        },
    }


def accounting_files(wildcards):
    return plan_files(accounting_plan(wildcards))


def evaluation_inputs(wildcards):
    return {
        "topk": [layout.topk(name) for name in TASKS],
        "gallery_assignments": [layout.assignment(t.gallery) for t in TASKS.values()],
        "ground_truth": ground_truth_path(),
        "settings": settings_file("ground_truth"),
    }


def browse_inputs(wildcards):
    inputs = {
        "topk": [layout.topk(name) for name in TASKS],
        "captions": [layout.manifest(layout.text_side(t)) for t in TASKS.values()],
        "images": [layout.manifest(layout.image_side(t)) for t in TASKS.values()],
        "settings": settings_file("browse"),
    }
    if ground_truth_path():
        inputs["ground_truth"] = ground_truth_path()
        inputs["ground_truth_settings"] = settings_file("ground_truth")
    return inputs


# ---- fusion ------------------------------------------------------------------


def fusion_channels():
    """(model, stage) of each fused CLIP channel, the tables' ranking model first: every
    stage of every model with fusion on, each model's ranking stage otherwise."""
    ranking = [(model, model.retrieval_stage) for model in MODELS]
    if not FUSION["enabled"]:
        return ranking
    others = [(m, s) for m in MODELS for s in m.stages if s != m.retrieval_stage]
    return ranking + others


def ocr_collections():
    """Image collections whose text OCR reads: the image side of every task."""
    sides = [
        layout.image_side(t) for t in [*TASKS.values(), *VALIDATION_TASKS.values()]
    ]
    return list(dict.fromkeys(sides))


def fusion_plan(tasks, validation=False):
    """What a fusion job reads, task by task: the query order, each channel's model card and
    feature shards, and the texts of the OCR channel (tuwen.fusion_inputs reads the plan).
    """
    plans = {}
    for name, task in tasks.items():
        image_side, text_side = layout.image_side(task), layout.text_side(task)
        plans[name] = {
            "query_order": (
                layout.manifest(task.queries)
                if validation
                else layout.retrieval(name, "queries.parquet")
            ),
            # Validation queries are ordered by their manifest; test queries by the gathered
            # features, which list exactly the queries that have an embedding.
            "query_id_column": (
                COLLECTIONS[task.queries].id_column if validation else None
            ),
            "query_assignment": layout.assignment(task.queries),
            "gallery_assignment": layout.assignment(task.gallery),
            "channels": {
                model.channel(stage): {
                    "card": card_of(model, stage),
                    "queries": features_of(task.queries, model, stage),
                    "gallery": features_of(task.gallery, model, stage),
                }
                for model, stage in fusion_channels()
            },
            # The models' ranking channels, always also tried together.
            "ranking_channels": [m.channel(m.retrieval_stage) for m in MODELS],
            "ocr": (
                {
                    "images_are_queries": image_side == task.queries,
                    "read": ocr_of(image_side),
                    "captions": layout.manifest(text_side),
                }
                if USE_OCR
                else None
            ),
        }
    return plans


def validation_fusion_plan(wildcards):
    return fusion_plan(VALIDATION_TASKS, validation=True)


def validation_fusion_files(wildcards):
    return plan_files(validation_fusion_plan(wildcards))


def test_fusion_plan(wildcards):
    return fusion_plan(TASKS) if ground_truth_path() else {}


def test_fusion_files(wildcards):
    return plan_files(test_fusion_plan(wildcards))


def fused_task_plan(wildcards):
    return fusion_plan({wildcards.task: TASKS[wildcards.task]})[wildcards.task]


def fused_task_files(wildcards):
    return plan_files(fused_task_plan(wildcards))


def ocr_plan(wildcards):
    return {name: ocr_of(name) for name in ocr_collections()}


def ocr_files(wildcards):
    return plan_files(ocr_plan(wildcards))


# ---- training ----------------------------------------------------------------


def train_inputs(wildcards):
    model = MODEL_BY_NAME[wildcards.model]
    inputs = {}
    if model.train["lock_image"]:
        inputs["locked_features"] = features_of("train_images", model, layout.BASE)
    return inputs


def train_settings(wildcards):
    return settings_file("train", wildcards.model)


def base_card(wildcards):
    return layout.model_card(wildcards.model, layout.BASE)


def train_state_path(wildcards):
    return layout.train_state(wildcards.model)


def training_outputs():
    return [
        layout.fine_tuned(model.name, name)
        for model in TRAINED
        for name in ("curves.png", "val_metrics.csv")
    ]


# ---- the run's targets -------------------------------------------------------


def used_collections():
    """Collections whose shard registry this run reads: searched, trained on, or fusion's."""
    used = encoded_collections()
    if any(model.train["lock_image"] for model in TRAINED):
        used.append("train_images")
    if FUSE:
        used += [
            name
            for task in VALIDATION_TASKS.values()
            for name in (task.queries, task.gallery)
        ]
    return list(dict.fromkeys(used))


def used_settings_groups():
    """The settings files (tuwen/settings.py) of the stages this run has."""
    groups = ["ingest", "encode_images", "retrieval", "figures"]
    groups += [group_name("model", model.name) for model in MODELS]
    groups += [group_name("train", model.name) for model in TRAINED]
    groups += ["demo"] if DEMO else []
    groups += ["validation", "fusion"] if FUSE else []
    groups += ["ocr"] if USE_OCR else []
    groups += ["browse"] if config["browse"]["enabled"] else []
    groups += ["ground_truth"] if ground_truth_path() else []
    return groups


def decision_files():
    """Every checkpoint output and settings file the run reads, as targets of `all`.

    Snakemake checks a job's params and inputs for changes only once its checkpoint inputs
    are known, and it resolves in one round only the checkpoints that the first DAG reaches:
    a job two checkpoints deep (fusion's tuning, behind the validation shards) is then never
    checked. Asking for every registry, model card and settings file up front puts them all
    in the first DAG, so a changed setting reruns its jobs on every path.
    """
    return (
        [layout.settings(group) for group in used_settings_groups()]
        + [layout.assignment(name) for name in used_collections()]
        + all_cards()
    )


def final_outputs():
    outputs = decision_files()
    outputs += [layout.result_table(task) for task in TASKS.values()]
    outputs.append(layout.summary("accounting.csv"))
    for task in TASKS:
        outputs += figure_files(task)
        outputs.append(layout.figure(task, "score_histogram.png"))
        if config["retrieval"]["dense_matrix"]:
            outputs.append(layout.retrieval(task, "similarity.npy"))
    if ground_truth_path():
        outputs.append(layout.evaluation("metrics.json"))
    if config["browse"]["enabled"]:
        outputs.append(layout.browse("index.html"))
    if FUSE:
        outputs.append(layout.evaluation("fusion.csv"))
    if USE_OCR:
        outputs.append(layout.summary("ocr.csv"))
    return outputs + training_outputs()


def print_closing_summary():
    """What the user wants to know when the run ends: tables, recall, what was left out."""
    from tuwen.summary import run_summary

    print(run_summary(), flush=True)
