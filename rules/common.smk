# The config and its validation, the declared run, and every input function of the rules:
# first the lookups several stages share (manifests, settings files, shards, model tags and
# cards, feature files), then each stage's own, in the order the Snakefile includes them.
# What the run reads and asks is resolved by tuwen.run.declaration; every path under
# results/ comes from tuwen.run.layout, the settings groups from tuwen.run.settings, the
# plans of paths and the run's targets from tuwen.run.plans.
# Parse-time code stays cheap (it re-runs inside every cluster job): stat calls and headers.

import json
import math
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from tuwen.clip.architectures import SMALL_ARCHITECTURES
from tuwen.clip.cards import read_card
from tuwen.report.notices import untrained_notice
from tuwen.run import layout, plans  # torch-free, cheap
from tuwen.run.contest import DEMO_LABELS, contest_files
from tuwen.run.declaration import (
    BASE,
    FINETUNE,
    IMAGES,
    TEXTS,
    TRAIN_IMAGES,
    TRAIN_TEXTS,
    VAL_IMAGES,
    VAL_TEXTS,
    VALIDATION_IMAGES,
    VALIDATION_TEXTS,
    DeclarationError,
    declare_run,
)
from tuwen.run.schema import coerce_config, load_schema
from tuwen.run.settings import group_name, group_pattern, group_settings, settings_text

CONFIG_SCHEMA = load_schema(workflow.source_path("../tuwen/run/config.schema.yaml"))
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
validate(config, workflow.source_path("../tuwen/run/config.schema.yaml"))

try:
    RUN = declare_run(config)
except DeclarationError as error:
    raise WorkflowError(str(error))
COLLECTIONS = RUN.collections
TASKS = RUN.tasks


# ---- how big the jobs are ----------------------------------------------------

SHARD_SIZE = {IMAGES: config["shards"]["size"], TEXTS: config["shards"]["text_size"]}
# Threads of an encode job (torch's and the decode workers'). Locally
# Snakemake caps them at --cores; on a cluster each such job asks for this many CPUs
# (a profile's set-threads changes it).
HEAVY_JOB_THREADS = 8
# Image ingest takes half the cores: on a small machine the model-card jobs and caption
# ingest that start beside it would otherwise wait for it before the first encode job.
INGEST_THREADS = max(1, min(HEAVY_JOB_THREADS, (workflow.cores or 2) // 2))
FIGURE_COUNT = config["figures"]["queries_per_task"]


def shard_runtime(kind, seconds_per_item):
    """Minutes a scheduler should allow a job over one full shard: start-up plus a generous
    time per item (encoding: 0.1 s an image, ViT-H-14 on a modest GPU, 0.01 s a caption;
    OCR: 1 s an image on one CPU core, 0.85 s measured on 2)."""
    return 10 + math.ceil(SHARD_SIZE[kind] * seconds_per_item / 60)


# ---- lookups several stages share ----------------------------------------------
# A setting that changes results reaches its jobs as the input settings_file(group), and
# never as a param of theirs (tuwen/run/settings.py says why, and lists the groups).


def settings_file(group, item=None):
    return layout.settings(group_name(group, item))


def manifest(name):
    return layout.manifest(name, COLLECTIONS[name].kind)


def shards_of(name):
    """Active shards of a collection, from its registry checkpoint."""
    import pandas as pd

    assignment = checkpoints.assign_shards.get(name=name).output["assignment"]
    return sorted(set(pd.read_parquet(assignment, columns=["shard"])["shard"]))


def shard_list(wildcards):
    """A shard's item list; written by the registry checkpoint, never by a rule of its own."""
    name = (
        getattr(wildcards, "col", None)
        or getattr(wildcards, "tset", None)
        or wildcards.name
    )
    checkpoints.assign_shards.get(name=name)
    return layout.shard_list(name, wildcards.shard)


def card_of(model, stage=None):
    return layout.model_card(model.name, stage or model.ranking_stage)


# Rules that depend on a model's tag also list its card as a plain input: that puts the
# describe_model checkpoint in the DAG from the start, so Snakemake resolves it before it
# builds jobs (such as a new shard's) whose input functions ask for the tag.
RANKING_CARD = card_of(RUN.ranking_model)


def tag_of(model, stage=None):
    """The tag of a model stage's weights, from its card (the describe_model checkpoint)."""
    stage = stage or model.ranking_stage
    card = checkpoints.describe_model.get(model=model.name, stage=stage).output.card
    return read_card(card)["tag"]


def features_of(name, model, stage=None):
    """A collection's current feature shards for one model stage (checkpoints: the card, the registry)."""
    tag = tag_of(model, stage)
    return [layout.features(tag, name, shard) for shard in shards_of(name)]


class RunFiles:
    """The files only the workflow knows (current shards, model tags), for tuwen.run.plans."""

    def features(self, collection, model, stage):
        return features_of(collection, model, stage)

    def ocr(self, collection):
        return [layout.ocr(collection, shard) for shard in shards_of(collection)]

    def sentences(self, collection, encoder):
        return [layout.sentences(encoder, collection, s) for s in shards_of(collection)]


RUN_FILES = RunFiles()


def judged_ground_truth():
    return [task.ground_truth.file for task in RUN.judged_tasks().values()]


# ---- rules/settings.smk ----------------------------------------------------------


def settings_of(wildcards):
    return settings_text(group_settings(config, wildcards.group, RUN))


# ---- rules/demo.smk --------------------------------------------------------------

DEMO_FILES = {
    what: os.path.join(RUN.data_root, path)
    for what, path in {**contest_files(), "labels": DEMO_LABELS}.items()
}
DEMO_FOLDERS = ("t2i_gallery", "i2t_images", "train_images")


def demo_root(wildcards, output):
    return RUN.data_root


# ---- rules/ingest.smk ------------------------------------------------------------


def image_folder(wildcards):
    return COLLECTIONS[wildcards.col].source


def always_verify_decode(wildcards):
    """Decode this folder's images at ingest whatever ingest.verify_decode says? The training
    and validation pairs' folders: training reads their images every epoch and cannot drop a
    pair mid-run, so a bad file must be rejected first.
    """
    return wildcards.col in (TRAIN_IMAGES, VALIDATION_IMAGES)


def text_set_inputs(wildcards):
    collection = COLLECTIONS[wildcards.tset]
    inputs = {
        "table": collection.source,
        "settings": settings_file("collection", wildcards.tset),
    }
    if collection.pairs_with:
        inputs["images"] = manifest(collection.pairs_with)
    return inputs


def query_collection_id_column(wildcards):
    return COLLECTIONS[TASKS[wildcards.task].queries].manifest_id


def query_list_inputs(wildcards):
    task = TASKS[wildcards.task]
    return {
        "table": task.query_list.file,
        "collection": manifest(task.queries),
        "settings": settings_file("task", task.name),
    }


# ---- rules/shards.smk ------------------------------------------------------------


def manifest_of(wildcards):
    return manifest(wildcards.name)


def shard_size_key(wildcards):
    """Which key of `shards` sizes this collection's new shards (read in the job: a size
    applies to shards made from then on, so changing it reruns nothing)."""
    return "size" if COLLECTIONS[wildcards.name].holds_images else "text_size"


def collection_kind(wildcards):
    return COLLECTIONS[wildcards.name].kind


# ---- rules/models.smk ------------------------------------------------------------


def model_checkpoint(wildcards):
    """The weights file a model stage's card names: a local checkpoint, the seeded weights of
    a small architecture, the fine-tuned checkpoint; [] when cn_clip fetches released weights.
    """
    model = RUN.model(wildcards.model)
    if wildcards.stage == FINETUNE:
        return layout.fine_tuned(model.name, "checkpoint.pt")
    if model.checkpoint:
        return os.path.expanduser(model.checkpoint)
    if model.name in SMALL_ARCHITECTURES:
        return layout.init_checkpoint(model.name, config["seed"])
    return []


def model_card_settings(wildcards):
    return settings_file("model", wildcards.model)


# ---- rules/encode.smk ------------------------------------------------------------


def stage_of_tag(tag):
    """The model and stage whose card has `tag`.

    Cards already written are read directly; if none matches (features asked for before
    any card exists), the checkpoint API makes Snakemake describe the models first.
    """
    for model in RUN.models:
        for stage in model.stages:
            path = card_of(model, stage)
            if os.path.exists(path) and read_card(path)["tag"] == tag:
                return model, stage
    for model in RUN.models:
        for stage in model.stages:
            if tag_of(model, stage) == tag:
                return model, stage
    raise WorkflowError(
        f"features of model {tag} were asked for, but no configured model has that tag; "
        "features of different models are never mixed"
    )


def card_for_tag(wildcards):
    """The model card whose tag names the features asked for."""
    return card_of(*stage_of_tag(wildcards.tag))


def towers_for_tag(wildcards):
    """The description of the exported towers of the model stage whose tag is asked for."""
    model, stage = stage_of_tag(wildcards.tag)
    return layout.model_towers(model.name, stage)


# ---- rules/sentences.smk ---------------------------------------------------------


def sentence_card(wildcards):
    return layout.sentence_encoder_card(wildcards.encoder)


def sentence_inputs(wildcards):
    """A shard's item list, and for images the text OCR read in that shard."""
    inputs = {"shard_list": shard_list(wildcards)}
    if COLLECTIONS[wildcards.name].holds_images:
        inputs["ocr"] = layout.ocr(wildcards.name, wildcards.shard)
    return inputs


# ---- rules/train.smk -------------------------------------------------------------


def train_inputs(wildcards):
    model = RUN.model(wildcards.model)
    inputs = {}
    if RUN.validates_apart:
        inputs["validation_pairs"] = layout.manifest(VALIDATION_TEXTS, TEXTS)
        inputs["validation_images"] = layout.manifest(VALIDATION_IMAGES, IMAGES)
    if model.train["lock_image"]:
        inputs["locked_features"] = features_of(TRAIN_IMAGES, model, BASE)
        if RUN.validates_apart:
            inputs["locked_validation_features"] = features_of(
                VALIDATION_IMAGES, model, BASE
            )
    return inputs


def train_settings(wildcards):
    return settings_file("train", wildcards.model)


def base_card(wildcards):
    return layout.model_card(wildcards.model, BASE)


def train_state_path(wildcards):
    return layout.train_state(wildcards.model)


# ---- rules/fusion.smk ------------------------------------------------------------


def validation_pairs(wildcards):
    """The pairs fusion's validation task is made from: those declared apart, else the
    training pairs (of which a share is held out)."""
    images, texts = (
        (VALIDATION_IMAGES, VALIDATION_TEXTS)
        if RUN.validates_apart
        else (TRAIN_IMAGES, TRAIN_TEXTS)
    )
    return {
        "images": layout.manifest(images, IMAGES),
        "texts": layout.manifest(texts, TEXTS),
    }


def fusion_plan(tasks, validation=False):
    """What a fusion job reads, task by task (tuwen.run.plans builds it)."""
    return {
        name: plans.fusion_task_plan(RUN, task, RUN_FILES, validation)
        for name, task in tasks.items()
    }


def validation_fusion_plan(wildcards):
    return fusion_plan(RUN.validation_tasks, validation=True)


def validation_fusion_inputs(wildcards):
    return plans.plan_inputs(validation_fusion_plan(wildcards))


def test_fusion_plan(wildcards):
    return fusion_plan(RUN.judged_tasks())


def test_fusion_inputs(wildcards):
    inputs = plans.plan_inputs(test_fusion_plan(wildcards))
    inputs["ground_truth"] = judged_ground_truth()
    return inputs


def ocr_plan(wildcards):
    return {name: RUN_FILES.ocr(name) for name in RUN.ocr_collections()}


def ocr_inputs(wildcards):
    return plans.plan_inputs(ocr_plan(wildcards))


# ---- rules/retrieve.smk ----------------------------------------------------------


def query_features(wildcards):
    return features_of(TASKS[wildcards.task].queries, RUN.ranking_model)


def query_order(wildcards):
    return plans.query_order(RUN, TASKS[wildcards.task])


def query_id_column(wildcards):
    return plans.query_id_column(RUN, TASKS[wildcards.task])


def query_assignment(wildcards):
    return layout.assignment(TASKS[wildcards.task].queries)


def gallery_assignment(wildcards):
    return layout.assignment(TASKS[wildcards.task].gallery)


def gallery_features(wildcards):
    return features_of(TASKS[wildcards.task].gallery, RUN.ranking_model)


def task_settings(wildcards):
    return settings_file("task", wildcards.task)


def fused_task_plan(wildcards):
    return fusion_plan({wildcards.task: TASKS[wildcards.task]})[wildcards.task]


def fused_task_inputs(wildcards):
    return plans.plan_inputs(fused_task_plan(wildcards))


def task_of_table(wildcards):
    return next(name for name, task in TASKS.items() if task.table == wildcards.table)


def topk_of_table(wildcards):
    return layout.topk(task_of_table(wildcards))


def table_settings(wildcards):
    return settings_file("task", task_of_table(wildcards))


# ---- rules/index.smk -------------------------------------------------------------


def index_wanted(name):
    """Whether the gallery is large enough (index.min_items) to be searched approximately."""
    from tuwen.files.parquet import row_count

    assignment = checkpoints.assign_shards.get(name=name).output["assignment"]
    return row_count(assignment) >= config["index"]["min_items"]


def index_plan(name):
    """(tag, shards trained on, segments as (start, count)) of a gallery's index: the training
    moves as the gallery grows, or when the last description found its centroids drifted.
    """
    from tuwen.ranking.index import planned_training, segment_plan

    shards = shards_of(name)
    tag = tag_of(RUN.ranking_model)
    previous = None
    if os.path.exists(layout.served_index(name)):
        with open(layout.served_index(name), encoding="utf-8") as handle:
            described = json.load(handle)
        if described.get("model_tag") == tag:
            previous = described.get("index")
    growth = config["index"]["retrain_growth"]
    return (
        tag,
        planned_training(len(shards), growth, previous),
        segment_plan(len(shards), config["index"]["segment_base"]),
    )


def index_inputs(wildcards):
    """Everything describe_index reads: the trained index and its segments when the gallery is
    indexed, and always the feature shards (exact search, for the recall it measures).
    """
    name = wildcards.col
    inputs = {
        "assignment": layout.assignment(name),
        "settings": settings_file("index_search"),
    }
    if index_wanted(name):
        inputs["features"] = features_of(name, RUN.ranking_model)
        tag, trained, segments = index_plan(name)
        inputs["trained"] = layout.index_trained(name, tag, str(trained))
        inputs["segments"] = [
            layout.index_segment(name, tag, str(trained), str(start), str(count))
            for start, count in segments
        ]
        inputs["rows"] = [
            layout.index_segment_rows(name, tag, str(trained), str(start), str(count))
            for start, count in segments
        ]
        # A task's queries of the other kind: the index's recall is measured on them too.
        queries = [
            t.queries
            for t in TASKS.values()
            if t.gallery == name
            and COLLECTIONS[t.queries].kind != COLLECTIONS[name].kind
        ]
        if queries:
            inputs["queries"] = features_of(queries[0], RUN.ranking_model)
    return inputs


def features_from(name, start, count):
    """The feature shards of a collection from its `start`-th, `count` of them."""
    return features_of(name, RUN.ranking_model)[int(start) : int(start) + int(count)]


def training_features(wildcards):
    return features_from(wildcards.col, 0, wildcards.trained)


def segment_features(wildcards):
    return features_from(wildcards.col, wildcards.start, wildcards.shards)


# ---- rules/report.smk ------------------------------------------------------------


def query_kind(wildcards):
    return TASKS[wildcards.task].query_kind


def figure_inputs(wildcards):
    task = TASKS[wildcards.task]
    return {
        "topk": layout.topk(task.name),
        "captions": manifest(task.text_side),
        "images": manifest(task.image_side),
    }


def accounting_plan(wildcards):
    """What account_inputs reads, collection by collection and task by task."""
    return plans.accounting_plan(RUN, RUN_FILES)


def accounting_inputs(wildcards):
    return plans.plan_inputs(accounting_plan(wildcards))


def evaluation_inputs(wildcards):
    judged = RUN.judged_tasks()
    return {
        "topk": [layout.topk(name) for name in judged],
        "gallery_assignments": [layout.assignment(t.gallery) for t in judged.values()],
        "ground_truth": judged_ground_truth(),
        "settings": settings_file("ground_truth"),
    }


def results_table_plan(wildcards):
    zero_shot_test = config["evaluate"]["zero_shot_test"]
    return plans.results_table_plan(RUN, RUN_FILES, zero_shot_test)


def results_table_inputs(wildcards):
    inputs = plans.plan_inputs(results_table_plan(wildcards))
    inputs["ground_truth"] = settings_file("ground_truth")
    inputs["settings"] = settings_file("results_table")
    return inputs


def browse_inputs(wildcards):
    """The page shows every task's ranked hits and every searchable collection's items."""
    inputs = {
        "topk": [layout.topk(name) for name in TASKS],
        "collections": [manifest(name) for name in RUN.searchable()],
        "settings": settings_file("browse"),
    }
    if RUN.judged_tasks():
        inputs["ground_truth"] = judged_ground_truth()
        inputs["ground_truth_settings"] = settings_file("ground_truth")
    return inputs


# ---- rules/duplicates.smk --------------------------------------------------------


def earlier_duplicate_hashes(wildcards):
    """The hashes of a collection's shards before this one: a shard is compared with them."""
    earlier = [s for s in shards_of(wildcards.col) if s < wildcards.shard]
    return [layout.duplicate_hashes(wildcards.col, s) for s in earlier]


def duplicates_inputs(wildcards):
    shards = shards_of(wildcards.col)
    return {
        "hashes": [layout.duplicate_hashes(wildcards.col, s) for s in shards],
        "pairs": [layout.duplicate_pairs(wildcards.col, s) for s in shards],
        "assignment": layout.assignment(wildcards.col),
        "settings": settings_file("duplicates"),
    }


# ---- rules/tags.smk --------------------------------------------------------------


def tag_inputs(wildcards):
    """The collection's current features by the ranking model, its card and towers (the
    labels' prompts are encoded by the same model), and the labels file."""
    model = RUN.ranking_model
    stage = model.ranking_stage
    return {
        "features": features_of(wildcards.col, model),
        "assignment": layout.assignment(wildcards.col),
        "card": card_of(model),
        "towers": layout.model_towers(model.name, stage),
        "labels": os.path.join(RUN.data_root, config["tags"]["labels"]),
    }


# ---- rules/finish.smk ------------------------------------------------------------


def finished_plan(wildcards):
    """Every file a reader of the finished run reads (tuwen.run.plans.finished_plan)."""
    return plans.finished_plan(
        RUN,
        RUN_FILES,
        config["duplicates"]["enabled"],
        plans.tagged_collections(RUN, config),
    )


def finished_inputs(wildcards):
    return plans.plan_inputs(finished_plan(wildcards))


# ---- the run's targets -------------------------------------------------------


def print_closing_summary():
    """What the user wants to know when the run ends: tables, recall, what was left out."""
    from tuwen.report.summary import run_summary

    print(run_summary(RUN), flush=True)
