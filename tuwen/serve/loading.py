"""Reading a finished run for live search: its channels, how each task ranks, every collection's
current embeddings, captions, image files and OCR texts, and its ground truth.

Everything here reads only the files a run declares (tuwen.run.layout paths); nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tuwen.errors import TuwenError
from tuwen.ranking.scoring import OCR, FusionRecipe, QueryBank, Ranking, read_bank
from tuwen.run import layout
from tuwen.run.declaration import GroundTruth, Run, contest_ground_truth, read_run


class RunNotReady(TuwenError):
    """A folder that holds no finished run to serve, and what to do about it."""


@dataclass(frozen=True)
class Channel:
    """A channel of the run: one CLIP model at one stage, or a sentence encoder, and its card."""

    name: str  # clip:<model> or clip:<model>:base, as fusion names it; text:<encoder>
    model: str
    stage: str
    tag: str
    card: Path
    resolution: int  # 0 for a sentence encoder's channel
    sentence: bool = False  # a text:<encoder> channel: captions and images' OCR text by meaning

    def folder(self, collection: str) -> str:
        """Give the folder of this channel's shards of a collection (relative to the run)."""
        if self.sentence:
            return layout.sentences_folder(self.model, collection)
        return layout.features_folder(self.tag, collection)


@dataclass
class Collection:
    """A collection's current items, sorted by id, with each channel's embeddings."""

    name: str
    kind: str
    ids: np.ndarray  # object array, sorted
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # channel name: N x D float32
    captions: dict[str, str] = field(default_factory=dict)  # text collections
    files: dict[str, tuple[str, str]] = field(default_factory=dict)  # image id: (path, digest)
    texts: dict[str, str] = field(default_factory=dict)  # OCR text read in each image (when the run has it)
    shards: np.ndarray | None = None  # each item's shard, where a channel's embeddings are left on disk

    @property
    def holds_images(self) -> bool:
        return self.kind == layout.IMAGES

    def row(self, item_id: str) -> int | None:
        """Give an item's row (column in a search), or None when it is not a current item."""
        row = int(np.searchsorted(self.ids, item_id))
        return row if row < len(self.ids) and self.ids[row] == item_id else None


@dataclass(frozen=True)
class TaskRankings:
    """How the run ranks: each task's `Ranking` (as its result table does), and the channel
    that ranks any other pairing (the first model's ranking stage)."""

    tasks: dict[str, Ranking]
    default: str

    def channel_of(self, declared: Run, gallery: str) -> str:
        """Give the channel that ranks a gallery's default queries: its task's, or the run's."""
        task = next((n for n, t in declared.tasks.items() if t.gallery == gallery), None)
        return self.tasks[task].channel if task else self.default


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def signature(run: Path) -> tuple:
    """Give what identifies the run's current files: a change means the index is stale."""
    try:
        tasks = list(read_run(run).tasks)
    except TuwenError:
        tasks = []
    patterns = [
        layout.model_cards_glob(),
        layout.assignment("*"),
        layout.features("*", "*", "*"),
        layout.ocr("*", "*"),
        layout.sentences("*", "*", "*"),
        layout.settings("*"),
        layout.served_index("*"),
    ]
    watched = [path for pattern in patterns for path in sorted(run.glob(pattern))]
    watched += [run / layout.fusion("chosen.json"), *(run / layout.topk(task) for task in tasks)]
    stamps = []
    for path in watched:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def read_declared(run: Path) -> Run:
    try:
        return read_run(run)
    except TuwenError as error:
        raise RunNotReady(str(error)) from None


def read_channels(run: Path) -> dict[str, Channel]:
    """Give every channel of the run by name, from its model and sentence-encoder cards."""
    from tuwen.text.sentences import channel_of

    cards = sorted(run.glob(layout.model_cards_glob()))
    stages_of: dict[str, set[str]] = {}
    for card in cards:
        model, stage = layout.model_card_parts(str(card))
        stages_of.setdefault(model, set()).add(stage)
    channels = {}
    for card in cards:
        model, stage = layout.model_card_parts(str(card))
        trains = layout.FINETUNE in stages_of[model]
        name = layout.Model(model, train={"enabled": trains}).channel(stage)
        described = read_json(card)
        channels[name] = Channel(name, model, stage, described["tag"], card, described["resolution"])
    if not channels:
        raise RunNotReady(
            f"{run} holds no model card ({layout.model_cards_glob()}); "
            f"run the workflow there first (make run, or snakemake --directory {run})"
        )
    for card in sorted(run.glob(layout.sentence_encoder_cards_glob())):
        described = read_json(card)
        name = channel_of(described["name"])
        channels[name] = Channel(
            name, described["name"], "sentence", described["tag"], card, 0, sentence=True
        )
    return channels


def read_rankings(run: Path, declared: Run, channels: dict[str, Channel]) -> TaskRankings:
    """Give each task's ranking from its result table's metadata (model, fusion recipe) and,
    when the recipe re-ranks, the query bank the table was ranked with."""
    from tuwen.files.parquet import read_metadata
    from tuwen.finished.reader import first_model_card

    by_tag = {c.tag: name for name, c in channels.items()}
    tasks = {}
    for task in declared.tasks:
        path = run / layout.topk(task)
        if not path.is_file():
            raise RunNotReady(
                f"{run} holds no finished run ({layout.topk(task)} is missing); "
                f"run the workflow there first (make run, or snakemake --directory {run})"
            )
        metadata = read_metadata(path)
        if metadata["model_tag"] not in by_tag:
            raise RunNotReady(f"{path}: its model {metadata['model_tag']} has no model card in the run")
        fusion = metadata.get("fusion")
        recipe = FusionRecipe.from_dict(json.loads(fusion)) if fusion else None
        bank = _read_bank(run / layout.query_bank(task), recipe)
        tasks[task] = Ranking(by_tag[metadata["model_tag"]], recipe, bank)
    # A gallery with no task: the first model's ranking stage ranks every query.
    default = next(iter(tasks.values())).channel if tasks else by_tag[read_json(first_model_card(run))["tag"]]
    return TaskRankings(tasks, default)


def _read_bank(path: Path, recipe: FusionRecipe | None) -> QueryBank | None:
    if recipe is None or not recipe.temperature or not path.is_file():
        return None
    return read_bank(path, recipe.temperature)


def needed_channels(rankings: TaskRankings, channels: dict[str, Channel]) -> set[str]:
    """Give the channels whose embeddings the server holds: those any ranking uses, and every
    sentence channel (for search by meaning in any gallery that has its shards)."""
    needed = {name for ranking in rankings.tasks.values() for name in ranking.channels}
    needed |= {rankings.default} | {name for name, channel in channels.items() if channel.sentence}
    needed.discard(OCR)
    return needed


def read_collections(
    run: Path,
    declared: Run,
    channels: dict[str, Channel],
    needed: set[str],
    only: set[str] | None = None,
    on_disk: dict[str, str] | None = None,
) -> dict[str, Collection]:
    """Give every encoded collection (or those in `only`) with its current items. `on_disk`:
    a collection's channel whose embeddings stay in its shards (an index searches them)."""
    from tuwen.ranking.channels import embeddings_by_id

    on_disk = on_disk or {}
    collections = {}
    for name, spec in declared.collections.items():
        assignment = run / layout.assignment(name)
        if (only is not None and name not in only) or not assignment.is_file():
            continue
        embeddings = {}
        for channel in sorted(needed - {on_disk.get(name)}):
            shards = sorted((run / channels[channel].folder(name)).glob("*.parquet"))
            if shards:
                embeddings[channel] = embeddings_by_id([str(s) for s in shards], str(assignment))[0]
        if name in on_disk:
            current = pd.read_parquet(assignment, columns=["id", "shard"]).drop_duplicates("id", keep="last")
            current = current.sort_values("id", kind="stable")
            ids = current["id"].to_numpy(dtype=object)
            if embeddings:
                ids = np.asarray(
                    sorted(set(ids).intersection(*(set(e) for e in embeddings.values()))), dtype=object
                )
            collection = Collection(name, spec.kind, ids)
            collection.shards = current.set_index("id")["shard"].reindex(ids).to_numpy(dtype=object)
        elif embeddings:
            # The items every channel embedded, sorted: ties break by id as in the workflow.
            ids = sorted(set.intersection(*(set(e) for e in embeddings.values())))
            collection = Collection(name, spec.kind, np.asarray(ids, dtype=object))
        else:
            continue
        ids = list(collection.ids)
        for channel, by_id in embeddings.items():
            dim = len(next(iter(by_id.values()))) if by_id else 0
            matrix = np.stack([by_id[i] for i in ids]) if ids else np.zeros((0, dim))
            collection.embeddings[channel] = np.ascontiguousarray(matrix, dtype=np.float32)
        read_items(run, collection)
        collections[name] = collection
    return collections


def read_items(run: Path, collection: Collection) -> None:
    """Fill in a collection's captions, or its image files and the OCR text read in them."""
    manifest = run / layout.manifest(collection.name, collection.kind)
    if not manifest.is_file():
        return
    if collection.holds_images:
        images = pd.read_parquet(manifest, columns=["image_id", "path", "digest", "status"])
        images = images[images["status"] == "ok"].drop_duplicates("image_id", keep="last")
        # Manifest paths are relative to the run folder unless the data lies elsewhere.
        collection.files = {
            i: (str(run / p), d)
            for i, p, d in zip(images["image_id"], images["path"], images["digest"], strict=True)
        }
        ocr = sorted((run / layout.ocr_folder(collection.name)).glob("*.parquet"))
        if ocr:
            from tuwen.text.ocr import read_ocr_texts

            assignment = run / layout.assignment(collection.name)
            collection.texts = read_ocr_texts(ocr, pd.read_parquet(assignment, columns=["id", "digest"]))
    else:
        from tuwen.data.ingest import accepted_captions

        collection.captions = {str(k): str(v) for k, v in accepted_captions(manifest).items()}
        collection.texts = collection.captions


def known_items(declared: Run, collections: dict[str, Collection]) -> dict[tuple[str, str], tuple[str, str]]:
    """Give the run's item for each caption and image content, so that a query that is one of
    the run's own (typed again, or uploaded) is known; a task's query collection wins over
    another holding the same content."""
    queries = [t.queries for t in declared.tasks.values()]
    ordered = sorted(collections.values(), key=lambda c: c.name in queries)
    known = {}
    for collection in ordered:
        for item_id, caption in collection.captions.items():
            known[("caption", caption.strip())] = (item_id, collection.name)
        for item_id, (_, digest) in collection.files.items():
            known[("digest", digest)] = (item_id, collection.name)
    return known


def resolve_ground_truth(run: Path, declared: Run, given: Path | None) -> dict[str, GroundTruth]:
    """Give each task's ground truth: a `text_id,image_id` CSV given for every task, or the run's own."""
    truths = {}
    for name, task in declared.tasks.items():
        if given is not None:
            truths[name] = contest_ground_truth(str(given), task.query_kind)
        elif task.ground_truth is not None:
            path = run / task.ground_truth.file  # a relative path is the run folder's
            if path.is_file():
                truths[name] = GroundTruth(
                    str(path), task.ground_truth.query_column, task.ground_truth.gallery_column
                )
    return truths


def read_positives(truths: dict[str, GroundTruth]) -> dict[str, dict[str, set[str]]]:
    from tuwen.ranking.recall import read_positives as positives_of

    return {task: positives_of(truth) for task, truth in truths.items()}
