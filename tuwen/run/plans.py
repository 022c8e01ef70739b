"""Plans of paths: which file is what, for the jobs that read many (torch-free, no Snakemake).

A fusion job reads, per task, the query order, every channel's model card and feature
shards and the OCR texts; the accounting job reads every collection's manifest and
features and every task's tables. The rules build these plans from the declared run
(tuwen.run.declaration) and a `FileLookup` that knows the current shards and model tags (through
Snakemake's checkpoints there; a test passes its own), hand the plan to the script as a
param, and declare its files as named inputs (`plan_inputs`), so every file a job reads is
an input under a name that says what it is.
"""

from __future__ import annotations

import re
from typing import Protocol

from tuwen.run import layout
from tuwen.run.declaration import Run, Task
from tuwen.run.layout import Model

# Plan keys whose values are not files: settings the scripts read beside the files.
NOT_FILES = frozenset({"query_id_column", "images_are_queries", "ranking_channels", "id_column", "direction"})


class FileLookup(Protocol):
    """The files of the run that only the workflow knows: current shards and model tags."""

    def features(self, collection: str, model: Model, stage: str) -> list[str]: ...

    def ocr(self, collection: str) -> list[str]: ...

    def sentences(self, collection: str, encoder: str) -> list[str]: ...


def channels_of(models: list[Model], fuse_stages: bool) -> list[tuple[Model, str]]:
    """Give (model, stage) of each CLIP channel, the tables' ranking model first: every stage
    of every model with `fuse_stages` (fusion on), each model's ranking stage otherwise."""
    ranking = [(model, model.retrieval_stage) for model in models]
    if not fuse_stages:
        return ranking
    return ranking + [(m, s) for m in models for s in m.stages if s != m.retrieval_stage]


def ocr_collections(run: Run) -> list[str]:
    """Give the image collections whose text OCR reads: the image side of every task."""
    sides = [t.image_side for t in [*run.tasks.values(), *run.validation_tasks.values()]]
    return list(dict.fromkeys(sides))


def query_order(run: Run, task: Task) -> str:
    """Give the file that lists a task's queries in the order of its result table."""
    if task.query_list:
        return layout.query_list(task.name)
    return layout.manifest(task.queries, run.collections[task.queries].kind)


def query_id_column(run: Run, task: Task) -> str:
    """Give the column of `query_order`'s file that names a query (a query list's is image_id)."""
    return "image_id" if task.query_list else run.collections[task.queries].manifest_id


def fusion_task_plan(
    run: Run,
    task: Task,
    models: list[Model],
    files: FileLookup,
    fuse_stages: bool,
    use_ocr: bool,
    validation: bool = False,
    text_encoders: tuple[str, ...] | list[str] = (),
) -> dict:
    """Give what a fusion job reads for one task (tuwen.ranking.channels reads the plan): the CLIP
    channels, then each sentence encoder's `text:<encoder>` channel (captions against the
    text read in the images), then the OCR texts."""
    from tuwen.text.sentences import channel_of

    kind_of = {name: c.kind for name, c in run.collections.items()}
    channels = {
        model.channel(stage): {
            "card": layout.model_card(model.name, stage),
            "queries": files.features(task.queries, model, stage),
            "gallery": files.features(task.gallery, model, stage),
        }
        for model, stage in channels_of(models, fuse_stages)
    }
    for encoder in text_encoders:
        channels[channel_of(encoder)] = {
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
        "ranking_channels": [m.channel(m.retrieval_stage) for m in models],
        "ocr": (
            {
                "images_are_queries": task.image_side == task.queries,
                "read": files.ocr(task.image_side),
                "captions": layout.manifest(task.text_side, kind_of[task.text_side]),
            }
            if use_ocr
            else None
        ),
    }


def accounting_plan(run: Run, ranking_model: Model, files: FileLookup) -> dict:
    """Give what account_inputs reads, collection by collection and task by task."""
    encoded = run.searchable()
    return {
        "collections": {
            name: {
                "manifest": layout.manifest(name, collection.kind),
                "id_column": collection.manifest_id,
                "features": (
                    files.features(name, ranking_model, ranking_model.retrieval_stage)
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
