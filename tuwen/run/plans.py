"""Plans of paths: which file is what, for the jobs that read many, and the run's targets
(torch-free, no Snakemake).

A fusion job reads, per task, the query order, every channel's model card and feature
shards and the OCR texts; the accounting job reads every collection's manifest and
features and every task's tables; the run's last job records every file a reader of the
finished run reads. The rules build these plans from the declared run
(tuwen.run.declaration) and a `FileLookup` that knows the current shards and model tags
(through Snakemake's checkpoints there; a test passes its own), hand the plan to the
script as a param, and declare its files as named inputs (`plan_inputs`), so every file a
job reads is an input under a name that says what it is.
"""

from __future__ import annotations

import re
from typing import Protocol

from tuwen.run import layout
from tuwen.run.channels import TEXT, channel_name
from tuwen.run.declaration import Model, Run, Task

# Plan keys whose values are not files: settings the scripts read beside the files.
NOT_FILES = frozenset(
    {"query_id_column", "images_are_queries", "ranking_channels", "id_column", "direction", "kind"}
)


class FileLookup(Protocol):
    """The files of the run that only the workflow knows: current shards and model tags."""

    def features(self, collection: str, model: Model, stage: str) -> list[str]: ...

    def ocr(self, collection: str) -> list[str]: ...

    def sentences(self, collection: str, encoder: str) -> list[str]: ...


def query_order(run: Run, task: Task) -> str:
    """Give the file that lists a task's queries in the order of its result table."""
    if task.query_list:
        return layout.query_list(task.name)
    return layout.manifest(task.queries, run.collections[task.queries].kind)


def query_id_column(run: Run, task: Task) -> str:
    """Give the column of `query_order`'s file that names a query (a query list's is image_id)."""
    return "image_id" if task.query_list else run.collections[task.queries].manifest_id


def fusion_task_plan(run: Run, task: Task, files: FileLookup, validation: bool = False) -> dict:
    """Give what a fusion job reads for one task (tuwen.ranking.channels reads the plan): the CLIP
    channels, then each sentence encoder's `text:<encoder>` channel (captions against the
    text read in the images), then the OCR texts."""
    kind_of = {name: c.kind for name, c in run.collections.items()}
    channels = {
        model.channel(stage): {
            "card": layout.model_card(model.name, stage),
            "queries": files.features(task.queries, model, stage),
            "gallery": files.features(task.gallery, model, stage),
        }
        for model, stage in run.clip_channels()
    }
    for encoder in run.text_encoders:
        channels[channel_name(TEXT, encoder)] = {
            "card": layout.sentence_encoder_card(encoder),
            "queries": files.sentences(task.queries, encoder),
            "gallery": files.sentences(task.gallery, encoder),
        }
    return {
        "direction": task.direction,
        # Validation queries are ordered by their manifest; test queries by the gathered
        # features, which list exactly the queries that have an embedding.
        "query_order": (
            layout.manifest(task.queries, kind_of[task.queries])
            if validation
            else layout.retrieval(task.name, "queries.parquet")
        ),
        "query_id_column": run.collections[task.queries].manifest_id if validation else None,
        "query_assignment": layout.assignment(task.queries),
        "gallery_assignment": layout.assignment(task.gallery),
        "channels": channels,
        # The models' ranking channels, always also tried together.
        "ranking_channels": [m.channel(m.ranking_stage) for m in run.models],
        "ocr": (
            {
                "images_are_queries": task.image_side == task.queries,
                "read": files.ocr(task.image_side),
                "captions": layout.manifest(task.text_side, kind_of[task.text_side]),
            }
            if run.ocr
            else None
        ),
    }


def accounting_plan(run: Run, files: FileLookup) -> dict:
    """Give what account_inputs reads, collection by collection and task by task."""
    encoded = run.searchable()
    ranking_model = run.ranking_model
    return {
        "collections": {
            name: {
                "manifest": layout.manifest(name, collection.kind),
                "id_column": collection.manifest_id,
                "features": (
                    files.features(name, ranking_model, ranking_model.ranking_stage)
                    if name in encoded
                    else None
                ),
            }
            for name, collection in run.collections.items()
            if collection.source is not None
        },
        "tasks": {
            name: {
                "order": query_order(run, task),
                "id_column": query_id_column(run, task),
                "topk": layout.topk(name),
                "unencoded": layout.retrieval(name, "unencoded_queries.csv"),
            }
            for name, task in run.tasks.items()
        },
    }


def duplicates_collections(run: Run) -> list[str]:
    """Give the collections whose duplicates are found: every searchable image collection."""
    return [name for name in run.searchable() if run.collections[name].holds_images]


def tagged_collections(run: Run, config: dict) -> list[str]:
    """Give the collections whose photos are tagged: every searchable image collection, where
    the run has a labels file."""
    return duplicates_collections(run) if config["tags"]["labels"] else []


def finished_plan(
    run: Run, files: FileLookup, duplicates: bool = False, tagged: list[str] | None = None
) -> dict:
    """Give every file a reader of the finished run reads (tuwen.finished), by what it is: the
    declaration, each channel's card, each searchable collection's manifest, assignment,
    feature shards per channel and OCR shards, each task's ranking, the fusion chosen, the
    indexes' descriptions and the settings a query is read with."""
    ranking = run.ranking_model
    cards = {
        model.channel(stage): layout.model_card(model.name, stage)
        for model in run.models
        for stage in model.stages
    }
    # Each model stage's exported towers: a query is encoded by what encoded its gallery.
    towers = {
        model.channel(stage): {
            "description": layout.model_towers(model.name, stage),
            **{tower: layout.model_towers(model.name, stage, f"{tower}.onnx") for tower in ("text", "image")},
        }
        for model in run.models
        for stage in model.stages
    }
    cards |= {channel_name(TEXT, e): layout.sentence_encoder_card(e) for e in run.text_encoders}
    features: dict[str, dict[str, list[str]]] = {
        name: {ranking.channel(ranking.ranking_stage): files.features(name, ranking, ranking.ranking_stage)}
        for name in run.searchable()
    }
    if run.fuse:
        for task in run.tasks.values():
            for name in (task.queries, task.gallery):
                for model, stage in run.clip_channels():
                    features[name][model.channel(stage)] = files.features(name, model, stage)
                for encoder in run.text_encoders:
                    features[name][channel_name(TEXT, encoder)] = files.sentences(name, encoder)
    ocr = run.ocr_collections()
    collections = {
        name: {
            "kind": run.collections[name].kind,
            "manifest": layout.manifest(name, run.collections[name].kind),
            "assignment": layout.assignment(name),
            "features": features[name],
            "ocr": files.ocr(name) if name in ocr else [],
            "duplicates": layout.duplicates(name)
            if duplicates and name in duplicates_collections(run)
            else None,
            "tags": layout.tags(name) if name in (tagged or []) else None,
        }
        for name in run.searchable()
    }
    tasks = {
        name: {"topk": layout.topk(name), **({"query_bank": layout.query_bank(name)} if run.fuse else {})}
        for name in run.tasks
    }
    settings = {"ingest": layout.settings("ingest")}
    settings |= {"ocr": layout.settings("ocr")} if run.reads_text else {}
    settings |= {"index_search": layout.settings("index_search")} if run.indexed_galleries() else {}
    return {
        "run": layout.settings("run"),
        "cards": cards,
        "towers": towers,
        "collections": collections,
        "tasks": tasks,
        "chosen": layout.fusion("chosen.json") if run.fuse else [],
        "indexes": {name: layout.served_index(name) for name in run.indexed_galleries()},
        "settings": settings,
    }


def model_cards(run: Run) -> list[str]:
    """Give the card of every stage of every model of the run."""
    return [layout.model_card(model.name, stage) for model in run.models for stage in model.stages]


def run_targets(run: Run, config: dict) -> list[str]:
    """Give the files the target `all` asks for: every decision file first (see
    `decision_files`), then each stage's outputs, then the finished run's record."""
    from tuwen.run.settings import used_groups

    groups = used_groups(
        run,
        config["browse"]["enabled"],
        config["duplicates"]["enabled"],
        bool(tagged_collections(run, config)),
    )
    decisions = [layout.settings(group) for group in groups]
    decisions += [layout.assignment(name) for name in run.used_collections()] + model_cards(run)
    outputs = [layout.manifest(name, run.collections[name].kind) for name in run.searchable()]
    outputs += [layout.result_table(task.table) for task in run.tasks.values() if task.table]
    for task in run.tasks:
        outputs.append(layout.topk(task))
        if config["retrieval"]["dense_matrix"]:
            outputs.append(layout.retrieval(task, "similarity.npy"))
    outputs += [layout.served_index(name) for name in run.indexed_galleries()]
    outputs += [
        layout.fine_tuned(model.name, name)
        for model in run.trained_models
        for name in ("curves.png", "val_metrics.csv")
    ]
    outputs += [layout.evaluation("fusion.csv")] if run.fuse else []
    outputs += [layout.summary("ocr.csv")] if run.reads_text else []
    outputs.append(layout.summary("accounting.csv"))
    for task in run.tasks:
        outputs += figure_files(task, config["figures"]["queries_per_task"])
        outputs.append(layout.figure(task, "score_histogram.png"))
    if run.judged_tasks():
        outputs.append(layout.evaluation("metrics.json"))
        outputs += cn_clip_evaluation_files(run)
        outputs += [layout.evaluation("results.md"), layout.evaluation("results.csv")]
    if config["browse"]["enabled"]:
        outputs.append(layout.browse("index.html"))
    if config["duplicates"]["enabled"]:
        outputs += [layout.duplicates(name) for name in duplicates_collections(run)]
    outputs += [layout.tags(name) for name in tagged_collections(run, config)]
    return decisions + outputs + [layout.finished()]


def results_table_plan(run: Run, files: FileLookup, zero_shot_test: bool) -> dict:
    """Give what the zero-shot and fine-tuned table reads (tuwen.report.results_table): per
    judged task, each model stage's query and gallery features (the base stage of a trained
    model only with `zero_shot_test`), and each fine-tuned model's validation recall."""
    tasks = {}
    for name, task in run.judged_tasks().items():
        stages = {
            model.name: {
                stage: {
                    "queries": files.features(task.queries, model, stage),
                    "gallery": files.features(task.gallery, model, stage),
                }
                for stage in (model.stages if zero_shot_test else [model.ranking_stage])
            }
            for model in run.models
        }
        tasks[name] = {
            "direction": task.direction,
            # The queries the result table ranks, in its order: those with an embedding.
            "query_order": layout.retrieval(name, "queries.parquet"),
            "query_assignment": layout.assignment(task.queries),
            "gallery_assignment": layout.assignment(task.gallery),
            "stages": stages,
        }
    validation = {m.name: layout.fine_tuned(m.name, "val_metrics.json") for m in run.trained_models}
    return {"tasks": tasks, "validation": validation}


def cn_clip_evaluation_files(run: Run) -> list[str]:
    """Give each judged task's files in cn_clip's evaluation format, beside metrics.json."""
    return [
        layout.cn_clip_evaluation(task, name) for task in run.judged_tasks() for name in layout.CN_CLIP_FILES
    ]


def figure_files(task: str, count: int) -> list[str]:
    """Give the figures of a task's sampled queries."""
    return [layout.figure(task, f"query_{i}.png") for i in range(count)]


def plan_inputs(plan: dict | list | str | None, name: str = "") -> dict[str, list[str]]:
    """Give a plan's files as named inputs: each file or file list under the path of keys
    that leads to it (`t2i_channels_clip_tuwen-tiny-rn_queries`), settings (NOT_FILES) left out."""
    named: dict[str, list[str]] = {}
    if isinstance(plan, dict):
        for key, value in plan.items():
            if key not in NOT_FILES:
                named.update(plan_inputs(value, f"{name}_{key}" if name else str(key)))
    elif isinstance(plan, list):
        named[_identifier(name)] = list(plan)
    elif isinstance(plan, str):
        named[_identifier(name)] = [plan]
    return named


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name) or "files"
