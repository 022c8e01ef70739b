# Config validation, the data layout, and the input functions of every stage.
# Parse-time code stays cheap (it re-runs inside every cluster job): a few stat calls.

import json
import math
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from tuwen.architectures import SMALL_ARCHITECTURES  # torch-free, cheap
from tuwen.config import coerce_config, load_schema
from tuwen.settings import SETTINGS_GROUPS, group_settings, settings_text

CONFIG_SCHEMA = load_schema(os.path.join(workflow.basedir, "config.schema.yaml"))
# Nested --config values arrive as strings; the schema says what each one is.
coerce_config(config, CONFIG_SCHEMA)
validate(config, workflow.source_path("../config.schema.yaml"))

DEMO = config["data_root"] == "demo"
DATA_ROOT = "results/demo/data" if DEMO else os.path.expanduser(config["data_root"])

# Contest layout: image folders, caption CSVs, and the query list of image → text.
IMAGE_FOLDERS = {
    "train_images": "附件1/ImageData",
    "t2i_gallery": "附件2/ImageData",
    "i2t_images": "附件3/ImageData",
}
TEXT_SETS = {
    "train_texts": {"csv": "附件1/ImageWordData.csv", "id_column": "image_id"},
    "t2i_queries": {"csv": "附件2/word_test.csv", "id_column": "text_id"},
    "i2t_gallery": {"csv": "附件3/word_data.csv", "id_column": "text_id"},
}
IMAGE_QUERY_LIST = "附件3/image_test.csv"
# Pairs of a text set with the image folder its ids must name.
PAIRED_FOLDER = {"train_texts": "train_images"}
# Fusion's validation task: 附件1's held-out pairs, as collections of their own (encoded,
# and read by OCR, like any other), made from the training manifests, not from folders.
VALIDATION = {"images": "val_images", "texts": "val_texts"}
IMAGE_COLLECTIONS = [*IMAGE_FOLDERS, VALIDATION["images"]]
TEXT_COLLECTIONS = [*TEXT_SETS, VALIDATION["texts"]]
TASKS = {
    "t2i": {"queries": "t2i_queries", "gallery": "t2i_gallery", "table": "1"},
    "i2t": {"queries": "i2t_images", "gallery": "i2t_gallery", "table": "2"},
}
TABLE_TASK = {spec["table"]: task for task, spec in TASKS.items()}


def _check_data_root():
    if DEMO:
        return
    wanted = [
        *IMAGE_FOLDERS.values(),
        *(s["csv"] for s in TEXT_SETS.values()),
        IMAGE_QUERY_LIST,
    ]
    missing = [p for p in wanted if not os.path.exists(os.path.join(DATA_ROOT, p))]
    if missing:
        raise WorkflowError(
            f"data_root {DATA_ROOT!r} does not hold the contest layout; missing: "
            + ", ".join(missing)
            + ". Point data_root at the folder that contains 附件1, 附件2 and 附件3."
        )


_check_data_root()


# ---- settings ----------------------------------------------------------------
# A setting that changes results reaches its jobs as the input settings_file(group), and
# never as a param of theirs (tuwen/settings.py says why, and lists the groups).


def settings_file(group):
    return f"results/settings/{group}.json"


def settings_of(wildcards):
    return settings_text(group_settings(config, wildcards.group))


def demo_root(wildcards, output):
    return os.path.dirname(os.path.dirname(output.train_pairs))


def data_path(relative):
    return os.path.join(DATA_ROOT, relative)


def ground_truth_path():
    """The ground-truth CSV, or None when there is none to evaluate against."""
    if config["ground_truth"] == "auto":
        path = data_path("ground_truth.csv")
        return path if DEMO or os.path.exists(path) else None
    return config["ground_truth"] or None


# ---- ingest ------------------------------------------------------------------


def image_folder(wildcards):
    return data_path(IMAGE_FOLDERS[wildcards.col])


def always_verify_decode(wildcards):
    """Decode this folder's images at ingest whatever ingest.verify_decode says? The training
    folder's: training reads its images every epoch and cannot drop a pair mid-run, so a bad
    file must be rejected first.
    """
    return wildcards.col == "train_images"


def text_set_inputs(wildcards):
    inputs = {"csv": data_path(TEXT_SETS[wildcards.tset]["csv"])}
    if wildcards.tset in PAIRED_FOLDER:
        inputs["images"] = (
            f"results/manifest/{PAIRED_FOLDER[wildcards.tset]}/images.parquet"
        )
    return inputs


def text_id_column(wildcards):
    return TEXT_SETS[wildcards.tset]["id_column"]


def manifest_of(wildcards):
    name = wildcards.name
    kind = "images" if name in IMAGE_COLLECTIONS else "texts"
    return f"results/manifest/{name}/{kind}.parquet"


# ---- models ------------------------------------------------------------------


def base_checkpoint():
    """The checkpoint file the base model is read from; [] when cn_clip fetches released weights."""
    if config["checkpoint"]:
        return os.path.expanduser(config["checkpoint"])
    if config["model"] in SMALL_ARCHITECTURES:
        return f"results/models/init/{config['model']}-seed{config['seed']}.pt"
    return []


TRAIN = config["train"]
# Model stages: "base" (released, local or seeded weights) and, when training, the run.
STAGES = ["base", TRAIN["run"]] if TRAIN["enabled"] else ["base"]


def model_checkpoint(wildcards):
    if wildcards.stage == "base":
        return base_checkpoint()
    return f"results/models/{wildcards.stage}/checkpoint.pt"


def encode_stage():
    """Which model encodes for retrieval: the fine-tuned one when training, else the base one."""
    return STAGES[-1]


# Rules that depend on the model tag also list the card as a plain input: that puts the
# describe_model checkpoint in the DAG from the start, so Snakemake resolves it before
# it builds jobs (such as a new shard's) whose input functions ask for the tag.
MODEL_CARD = f"results/models/{encode_stage()}/model.json"


def model_tag(stage=None):
    card = checkpoints.describe_model.get(stage=stage or encode_stage()).output.card
    with open(card, encoding="utf-8") as handle:
        return json.load(handle)["tag"]


def card_for_tag(wildcards):
    """The model card whose tag names the features asked for.

    Cards already written are read directly; if none matches (features asked for before
    any card exists), the checkpoint API makes Snakemake describe the models first.
    """
    for stage in STAGES:
        path = f"results/models/{stage}/model.json"
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                if json.load(handle)["tag"] == wildcards.model:
                    return path
    for stage in STAGES:
        if model_tag(stage) == wildcards.model:
            return f"results/models/{stage}/model.json"
    raise WorkflowError(
        f"features of model {wildcards.model} were asked for, but no configured model has that tag; "
        "features of different models are never mixed"
    )


# ---- shards and features -----------------------------------------------------

SHARD_SIZE = {"image": config["shards"]["size"], "text": config["shards"]["text_size"]}
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
    return "size" if wildcards.name in IMAGE_COLLECTIONS else "text_size"


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
    registry = os.path.dirname(
        checkpoints.assign_shards.get(name=name).output.assignment
    )
    return f"{registry}/lists/{wildcards.shard}.parquet"


def features_of(name, stage=None):
    tag = model_tag(stage)
    return [
        f"results/features/{tag}/{name}/{shard}.parquet" for shard in shards_of(name)
    ]


# ---- retrieval ---------------------------------------------------------------


def query_inputs(wildcards):
    spec = TASKS[wildcards.task]
    if wildcards.task == "t2i":
        order = f"results/manifest/{spec['queries']}/texts.parquet"
    else:
        order = "results/manifest/i2t_queries/queries.parquet"
    return {
        "order": order,
        "assignment": f"results/shards/{spec['queries']}/assignment.parquet",
        "features": features_of(spec["queries"]),
    }


def search_inputs(wildcards):
    gallery = TASKS[wildcards.task]["gallery"]
    return {
        "queries": f"results/retrieval/{wildcards.task}/queries.parquet",
        "assignment": f"results/shards/{gallery}/assignment.parquet",
        "features": features_of(gallery),
    }


def table_task(wildcards):
    return TABLE_TASK[wildcards.number]


def table_topk(wildcards):
    return f"results/retrieval/{table_task(wildcards)}/topk.parquet"


# ---- figures and evaluation --------------------------------------------------


def figure_inputs(wildcards):
    task = wildcards.task
    if task == "t2i":
        captions, images = (
            "results/manifest/t2i_queries/texts.parquet",
            "results/manifest/t2i_gallery/images.parquet",
        )
    else:
        captions, images = (
            "results/manifest/i2t_gallery/texts.parquet",
            "results/manifest/i2t_images/images.parquet",
        )
    return {
        "topk": f"results/retrieval/{task}/topk.parquet",
        "captions": captions,
        "images": images,
        "settings": settings_file("figures"),
    }


FIGURE_COUNT = config["figures"]["queries_per_task"]


def figure_files(task):
    return [f"results/figures/{task}/query_{i}.png" for i in range(FIGURE_COUNT)]


def encoded_collections():
    """Collections this run encodes: those retrieval searches (training adds its own)."""
    return [
        name for spec in TASKS.values() for name in (spec["queries"], spec["gallery"])
    ]


def accounting_inputs(wildcards):
    manifests = [f"results/manifest/{name}/images.parquet" for name in IMAGE_FOLDERS]
    manifests += [f"results/manifest/{name}/texts.parquet" for name in TEXT_SETS]
    return {
        "manifests": manifests,
        "features": [
            path for name in encoded_collections() for path in features_of(name)
        ],
        "query_manifests": [
            "results/manifest/t2i_queries/texts.parquet",
            "results/manifest/i2t_queries/queries.parquet",
        ],
        "topk": [f"results/retrieval/{task}/topk.parquet" for task in TASKS],
        "unencoded": [
            f"results/retrieval/{task}/unencoded_queries.csv" for task in TASKS
        ],
    }


def evaluation_inputs(wildcards):
    return {
        "topk": [f"results/retrieval/{task}/topk.parquet" for task in TASKS],
        "gallery_assignments": [
            f"results/shards/{spec['gallery']}/assignment.parquet"
            for spec in TASKS.values()
        ],
        "ground_truth": ground_truth_path(),
        "settings": settings_file("ground_truth"),
    }


def browse_inputs(wildcards):
    inputs = {
        "topk": [f"results/retrieval/{task}/topk.parquet" for task in TASKS],
        "t2i_captions": "results/manifest/t2i_queries/texts.parquet",
        "i2t_captions": "results/manifest/i2t_gallery/texts.parquet",
        "t2i_images": "results/manifest/t2i_gallery/images.parquet",
        "i2t_images": "results/manifest/i2t_images/images.parquet",
        "settings": settings_file("browse"),
    }
    if ground_truth_path():
        inputs["ground_truth"] = ground_truth_path()
        inputs["ground_truth_settings"] = settings_file("ground_truth")
    return inputs


# ---- fusion ------------------------------------------------------------------

FUSION = config["fusion"]
USE_OCR = FUSION["enabled"] and FUSION["ocr"]


# Image collections whose text OCR reads: the t2i gallery, the i2t queries, validation images.
OCR_COLLECTIONS = [
    TASKS["t2i"]["gallery"],
    TASKS["i2t"]["queries"],
    VALIDATION["images"],
]


def ocr_of(name):
    return [f"results/ocr/{name}/{shard}.parquet" for shard in shards_of(name)]


def ocr_inputs(wildcards):
    return [path for name in OCR_COLLECTIONS for path in ocr_of(name)]


def fusion_task_inputs(queries, gallery, query_order):
    """The files of one fused task: each model's features of both sides, the shard
    assignments, and the texts of the lexical channel (captions, or OCR of the images).
    """
    inputs = {
        "query_order": query_order,
        "query_assignment": f"results/shards/{queries}/assignment.parquet",
        "gallery_assignment": f"results/shards/{gallery}/assignment.parquet",
        "cards": [f"results/models/{stage}/model.json" for stage in STAGES],
    }
    for stage in STAGES:
        inputs[f"query_features_{stage}"] = features_of(queries, stage)
        inputs[f"gallery_features_{stage}"] = features_of(gallery, stage)
    if USE_OCR:
        image_side, text_side = (
            (gallery, queries) if queries in TEXT_COLLECTIONS else (queries, gallery)
        )
        inputs["ocr"] = ocr_of(image_side)
        inputs["captions"] = f"results/manifest/{text_side}/texts.parquet"
    return inputs


def fused_search_inputs(wildcards):
    spec = TASKS[wildcards.task]
    inputs = fusion_task_inputs(
        spec["queries"],
        spec["gallery"],
        f"results/retrieval/{wildcards.task}/queries.parquet",
    )
    return inputs


def tune_fusion_inputs(wildcards):
    images, texts = VALIDATION["images"], VALIDATION["texts"]
    return {
        **{
            f"t2i_{k}": v
            for k, v in fusion_task_inputs(
                texts, images, f"results/manifest/{texts}/texts.parquet"
            ).items()
        },
        **{
            f"i2t_{k}": v
            for k, v in fusion_task_inputs(
                images, texts, f"results/manifest/{images}/images.parquet"
            ).items()
        },
        "pairs": f"results/manifest/{texts}/texts.parquet",
    }


def evaluate_fusion_inputs(wildcards):
    inputs = {}
    if ground_truth_path():
        inputs["ground_truth"] = ground_truth_path()
        inputs["ground_truth_settings"] = settings_file("ground_truth")
        for task, spec in TASKS.items():
            order = f"results/retrieval/{task}/queries.parquet"
            for key, value in fusion_task_inputs(
                spec["queries"], spec["gallery"], order
            ).items():
                inputs[f"{task}_{key}"] = value
    return inputs


def train_inputs(wildcards):
    inputs = {
        "pairs": "results/manifest/train_texts/texts.parquet",
        "images": "results/manifest/train_images/images.parquet",
        "card": "results/models/base/model.json",
        "settings": settings_file("train"),
    }
    if TRAIN["lock_image"]:
        inputs["locked_features"] = features_of("train_images", stage="base")
    return inputs


def train_state_path(wildcards):
    return f"results/models/{wildcards.run}/state/last.pt"


def training_outputs():
    if not TRAIN["enabled"]:
        return []
    run = TRAIN["run"]
    return [f"results/models/{run}/curves.png", f"results/models/{run}/val_metrics.csv"]


def used_collections():
    """Collections whose shard registry this run reads: searched, trained on, or fusion's."""
    used = encoded_collections()
    if TRAIN["lock_image"] and TRAIN["enabled"]:
        used.append("train_images")
    if FUSION["enabled"]:
        used += [VALIDATION["images"], VALIDATION["texts"]]
    return used


def used_settings_groups():
    """The settings groups (tuwen/settings.py) of the stages this run has."""
    groups = ["ingest", "model", "encode_images", "retrieval", "figures"]
    groups += ["demo"] if DEMO else []
    groups += ["train"] if TRAIN["enabled"] else []
    groups += ["validation", "fusion"] if FUSION["enabled"] else []
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
        [settings_file(group) for group in used_settings_groups()]
        + [f"results/shards/{name}/assignment.parquet" for name in used_collections()]
        + [f"results/models/{stage}/model.json" for stage in STAGES]
    )


def final_outputs():
    outputs = decision_files() + [
        "results/result1.csv",
        "results/result2.csv",
        "results/summary/accounting.csv",
    ]
    for task in TASKS:
        outputs += figure_files(task)
        outputs.append(f"results/figures/{task}/score_histogram.png")
        if config["retrieval"]["dense_matrix"]:
            outputs.append(f"results/retrieval/{task}/similarity.npy")
    if ground_truth_path():
        outputs.append("results/eval/metrics.json")
    if config["browse"]["enabled"]:
        outputs.append("results/browse/index.html")
    if FUSION["enabled"]:
        outputs.append("results/eval/fusion.csv")
    if USE_OCR:
        outputs.append("results/summary/ocr.csv")
    return outputs + training_outputs()
