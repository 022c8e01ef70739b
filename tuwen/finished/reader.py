"""What a finished run ranks with, read from its files (for the CLI and the server).

A task's top-k table names the model that ranked it (`model_tag` in its metadata). A
run with no task (a gallery to search and nothing else) ranks with its first model's
ranking stage: the fine-tuned weights where the model trained, else its base weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuwen.errors import TuwenError
from tuwen.run import layout
from tuwen.run.declaration import Run


class RunNotFinished(TuwenError):
    """A run folder that holds no finished run to answer from, and what to do about it."""


def not_finished(run_folder: Path, missing: str) -> RunNotFinished:
    return RunNotFinished(
        f"{run_folder} holds no finished run ({missing} is missing); "
        f"run the workflow there first (make run, or snakemake --directory {run_folder})"
    )


def first_model_card(run_folder: Path) -> Path:
    """Give the model card of the run's first model at its ranking stage."""
    retrieval = run_folder / layout.settings("retrieval")
    if not retrieval.is_file():
        raise not_finished(run_folder, layout.settings("retrieval"))
    first = json.loads(retrieval.read_text(encoding="utf-8"))["models"][0]
    name = first if isinstance(first, str) else first["name"]
    for stage in (layout.FINETUNE, layout.BASE):
        card = run_folder / layout.model_card(name, stage)
        if card.is_file():
            return card
    raise not_finished(run_folder, layout.model_card(name, layout.BASE))


def default_gallery(run: Run, query_kind: str) -> str:
    """Give the collection a query of `query_kind` searches by default: its task's gallery, or
    the run's first searchable collection of the other kind (of its own kind where none)."""
    task = next((t for t in run.tasks.values() if t.query_kind == query_kind), None)
    if task is not None:
        return task.gallery
    other = layout.TEXTS if query_kind == layout.IMAGES else layout.IMAGES
    searchable = run.searchable()
    of_other = [n for n in searchable if run.collections[n].kind == other]
    if not (of_other or searchable):
        raise RunNotFinished("the run has no collection to search")
    return (of_other or searchable)[0]
