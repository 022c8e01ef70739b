"""A finished run held in memory for live search: its models, every collection's current
embeddings, captions, image files, OCR texts and ground truth, and the ranking of one new
query the way the workflow ranks the run's own queries.

What ranks a query against a gallery:
- the run's task of that kind and gallery (text → 附件2's images, image → 附件3's captions)
  ranks by what the run's tables rank by: the ranking model's cosine (float32, exactly as
  `tuwen.retrieval` scores a shard), or the fusion chosen on validation (float64, exactly
  as `tuwen.fusion` scores a block). Re-ranking with the query set (inverted softmax) needs
  every query of the task at once; a single new query is ranked without it, and the
  answer says so (`not_applied`).
- any other pairing (text → captions, image → images, the training images, ...) ranks by
  the ranking model's cosine.
Ties break by id everywhere, as in the workflow.

Everything here reads only the files a run declares (tuwen.layout paths); nothing is
written to the run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tuwen import layout
from tuwen.errors import TuwenError
from tuwen.fusion import OCR, FusionRecipe
from tuwen.images import DEFAULT_MAX_PIXELS, ImageRejected, content_digest, decode_image
from tuwen.run import GroundTruth, Run, contest_ground_truth, read_run

LOG = logging.getLogger(__name__)


class RunNotReady(TuwenError):
    """A folder that holds no finished run to serve, and what to do about it."""


class QueryError(TuwenError):
    """A query the run cannot answer (bad input): the server's 400."""


class UnknownGallery(TuwenError):
    """A gallery name the run does not hold: the server's 404."""


@dataclass(frozen=True)
class Channel:
    """A CLIP channel of the run: one model at one stage, and its model card."""

    name: str  # clip:<model> or clip:<model>:base, as fusion names it
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
    row_of: dict[str, int] = field(default_factory=dict)

    @property
    def holds_images(self) -> bool:
        return self.kind == layout.IMAGES


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    cosine: float
    parts: list[tuple[str, float]]


@dataclass
class Query:
    """One query, ready to rank: its embedding per channel, its text for the OCR channel,
    the run's id for it when it is one of the run's items (for ground truth), and its kind."""

    kind: str
    label: str
    vectors: dict[str, np.ndarray]
    text: str = ""
    known_id: str | None = None
    known_in: str | None = None


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


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


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


class RunIndex:
    """Everything a run needs to answer queries, loaded once from its files."""

    def __init__(self, run: Path, ground_truth: Path | None = None, max_image_pixels: int | None = None):
        self.run = run
        self.loaded_at = time.time()
        self.signature = signature(run)
        try:
            self.declared = read_run(run)
        except TuwenError as error:
            raise RunNotReady(str(error)) from None
        self.channels = self._read_channels()
        self.ranking: dict[str, str] = {}  # task: the ranking channel (its cosine is `cosine`)
        self.settings: dict[str, FusionRecipe | None] = {}
        self._read_rankings()
        self.collections = self._read_collections()
        self._known_items = self._index_known_items()
        self.models: dict[str, object] = {}
        self._model_lock = threading.Lock()
        self.positives = self._read_ground_truth(resolve_ground_truth(run, self.declared, ground_truth))
        ingest = run / layout.settings("ingest")
        # The run's own acceptance rule for images (the decompression-bomb guard) by default.
        run_limit = _read_json(ingest)["ingest"]["max_image_pixels"] if ingest.is_file() else None
        self.max_image_pixels = max_image_pixels or run_limit or DEFAULT_MAX_PIXELS
        self._ocr_engine = None
        self._lexical: dict[str, object] = {}

    # ---- loading ------------------------------------------------------------------

    def _read_channels(self) -> dict[str, Channel]:
        cards = sorted(self.run.glob(layout.model_cards_glob()))
        stages_of: dict[str, set[str]] = {}
        for card in cards:
            model, stage = layout.model_card_parts(str(card))
            stages_of.setdefault(model, set()).add(stage)
        channels = {}
        for card in cards:
            model, stage = layout.model_card_parts(str(card))
            trains = layout.FINETUNE in stages_of[model]
            name = layout.Model(model, train={"enabled": trains}).channel(stage)
            described = _read_json(card)
            channels[name] = Channel(name, model, stage, described["tag"], card, described["resolution"])
        if not channels:
            raise RunNotReady(
                f"{self.run} holds no model card ({layout.model_cards_glob()}); "
                f"run the workflow there first (make run, or snakemake --directory {self.run})"
            )
        from tuwen.sentences import channel_of

        for card in sorted(self.run.glob(layout.sentence_encoder_cards_glob())):
            described = _read_json(card)
            name = channel_of(described["name"])
            channels[name] = Channel(
                name, described["name"], "sentence", described["tag"], card, 0, sentence=True
            )
        return channels

    def _read_rankings(self) -> None:
        from tuwen.finished import first_model_card
        from tuwen.parquet import read_metadata

        by_tag = {c.tag: name for name, c in self.channels.items()}
        if not self.declared.tasks:
            # A gallery with no task: the first model's ranking stage ranks every query.
            card = first_model_card(self.run)
            self.default_ranking = by_tag[_read_json(card)["tag"]]
        for task in self.declared.tasks:
            path = self.run / layout.topk(task)
            if not path.is_file():
                raise RunNotReady(
                    f"{self.run} holds no finished run ({layout.topk(task)} is missing); "
                    f"run the workflow there first (make run, or snakemake --directory {self.run})"
                )
            metadata = read_metadata(path)
            if metadata["model_tag"] not in by_tag:
                raise RunNotReady(f"{path}: its model {metadata['model_tag']} has no model card in the run")
            self.ranking[task] = by_tag[metadata["model_tag"]]
            fusion = metadata.get("fusion")
            self.settings[task] = FusionRecipe.from_dict(json.loads(fusion)) if fusion else None
        if self.declared.tasks:
            self.default_ranking = self.ranking[next(iter(self.declared.tasks))]

    def _read_collections(self) -> dict[str, Collection]:
        from tuwen.fusion_inputs import embeddings_by_id

        needed = {name for setting in self.settings.values() if setting for name in setting.used}
        needed |= {*self.ranking.values(), self.default_ranking}
        # Every sentence channel, for search by meaning in any gallery that has its shards.
        needed |= {name for name, channel in self.channels.items() if channel.sentence}
        needed.discard(OCR)
        collections = {}
        for name, spec in self.declared.collections.items():
            assignment = self.run / layout.assignment(name)
            if not assignment.is_file():
                continue
            embeddings = {}
            for channel in sorted(needed):
                folder = self.run / self.channels[channel].folder(name)
                shards = sorted(folder.glob("*.parquet"))
                if shards:
                    embeddings[channel] = embeddings_by_id([str(s) for s in shards], str(assignment))[0]
            if not embeddings:
                continue
            # The items every channel embedded, sorted: ties break by id as in the workflow.
            ids = sorted(set.intersection(*(set(e) for e in embeddings.values())))
            collection = Collection(name, spec.kind, np.asarray(ids, dtype=object))
            collection.row_of = {item: row for row, item in enumerate(ids)}
            for channel, by_id in embeddings.items():
                dim = len(next(iter(by_id.values()))) if by_id else 0
                matrix = np.stack([by_id[i] for i in ids]) if ids else np.zeros((0, dim))
                collection.embeddings[channel] = np.ascontiguousarray(matrix, dtype=np.float32)
            self._read_items(collection)
            collections[name] = collection
        return collections

    def _read_items(self, collection: Collection) -> None:
        manifest = self.run / layout.manifest(collection.name, collection.kind)
        if not manifest.is_file():
            return
        if collection.holds_images:
            images = pd.read_parquet(manifest, columns=["image_id", "path", "digest", "status"])
            images = images[images["status"] == "ok"].drop_duplicates("image_id", keep="last")
            # Manifest paths are relative to the run folder unless the data lies elsewhere.
            collection.files = {
                i: (str(self.run / p), d)
                for i, p, d in zip(images["image_id"], images["path"], images["digest"], strict=True)
            }
            ocr = sorted((self.run / layout.ocr_folder(collection.name)).glob("*.parquet"))
            if ocr:
                from tuwen.ocr import read_ocr_texts

                assignment = self.run / layout.assignment(collection.name)
                collection.texts = read_ocr_texts(ocr, pd.read_parquet(assignment, columns=["id", "digest"]))
        else:
            from tuwen.ingest import accepted_captions

            collection.captions = {str(k): str(v) for k, v in accepted_captions(manifest).items()}
            collection.texts = collection.captions

    def _read_ground_truth(self, truths: dict[str, GroundTruth]) -> dict[str, dict[str, set[str]]]:
        from tuwen.evaluation import read_positives

        return {task: read_positives(truth) for task, truth in truths.items()}

    # ---- what it holds --------------------------------------------------------------

    def galleries(self) -> list[dict]:
        """Give every searchable collection: its name, kind, size and whether it is a task's gallery."""
        task_of = {task.gallery: name for name, task in self.declared.tasks.items()}
        return [
            {
                "name": c.name,
                "kind": c.kind,
                "items": len(c.ids),
                "task": task_of.get(c.name),
                # Channels a query may be ranked by alone here (by=...): a model's cosine, or by meaning.
                "by": sorted(c.embeddings),
            }
            for c in self.collections.values()
        ]

    def default_gallery(self, kind: str) -> str:
        """Give the gallery that the run's task for queries of `kind` searches (tuwen.finished)."""
        from tuwen.finished import default_gallery

        return default_gallery(self.declared, kind)

    def gallery(self, name: str) -> Collection:
        if name not in self.collections:
            known = ", ".join(self.collections)
            raise UnknownGallery(f"no gallery {name!r} in this run (galleries: {known})")
        return self.collections[name]

    def task_for(self, query_kind: str, gallery: str) -> str | None:
        """Give the run's task that ranks queries of `query_kind` against `gallery`, if one does."""
        return next(
            (
                n
                for n, t in self.declared.tasks.items()
                if t.query_kind == query_kind and t.gallery == gallery
            ),
            None,
        )

    def rankings_of(self, gallery: str) -> list[str]:
        """Give the channels a query may be ranked by alone in `gallery` (`by=`): those it embeds."""
        return sorted(self.gallery(gallery).embeddings)

    def scoring(
        self, query_kind: str, gallery: str, by: str | None = None
    ) -> tuple[str, FusionRecipe | None, list[str]]:
        """Give the ranking channel, the fusion setting that applies (None: the cosine ranks),
        and what of the run's ranking a single new query cannot have; `by` ranks by one
        channel's cosine alone (e.g. text:use-m3, by meaning)."""
        if by is not None:
            if by not in self.rankings_of(gallery):
                known = ", ".join(self.rankings_of(gallery))
                raise QueryError(f"{gallery} cannot be ranked by {by!r} (by: {known})")
            return by, None, []
        task = self.task_for(query_kind, gallery)
        if task is None:
            return self.default_ranking, None, []
        setting = self.settings[task]
        if setting is None:
            return self.ranking[task], None, []
        not_applied = []
        if setting.temperature:
            not_applied.append("rerank: re-ranking (inverted softmax) needs the task's whole query set")
            setting = FusionRecipe(setting.weights, None)
        return self.ranking[task], setting, not_applied

    # ---- queries --------------------------------------------------------------------

    def model(self, channel: str):
        """Give a channel's model, loaded once (torch is imported on first use)."""
        with self._model_lock:
            if channel not in self.models and self.channels[channel].sentence:
                from tuwen.sentences import EncoderMissing, load_sentence_encoder

                try:
                    self.models[channel] = load_sentence_encoder(self.channels[channel].model)
                except EncoderMissing as error:
                    raise RunNotReady(str(error)) from None
            if channel not in self.models:
                from tuwen.models import ModelCard, ModelError, load_model

                card = ModelCard.read(self.channels[channel].card)
                try:
                    self.models[channel] = load_model(card.arch, card.checkpoint_in(self.run))
                except ModelError as error:
                    raise RunNotReady(f"the run's model {card.tag} cannot be loaded: {error}") from None
            return self.models[channel]

    def channels_for(self, query_kind: str, gallery: str, by: str | None = None) -> list[str]:
        ranking, setting, _ = self.scoring(query_kind, gallery, by)
        used = setting.used if setting else [ranking]
        return [c for c in dict.fromkeys([ranking, *used]) if c != OCR]

    def _embed_text(self, channel: str, text: str) -> np.ndarray:
        """Give a text's embedding by a channel: a CLIP model's caption, or a sentence encoder's."""
        if self.channels[channel].sentence:
            return self.model(channel).encode([text])[0]
        from tuwen.encode import encode_caption

        return encode_caption(self.model(channel), text)

    def text_query(self, text: str, gallery: str, by: str | None = None) -> Query:
        """Give a caption as a query against `gallery` (every channel that ranks it encoded)."""
        text = text.strip()
        if not text:
            raise QueryError("the query text is empty")
        if len(text) > 1000:
            raise QueryError(f"the query text has {len(text)} characters; at most 1000")
        vectors = {c: self._embed_text(c, text) for c in self.channels_for(layout.TEXTS, gallery, by)}
        known_id, known_in = self._known_items.get(("caption", text), (None, None))
        return Query(layout.TEXTS, text, vectors, text=text, known_id=known_id, known_in=known_in)

    def image_query(
        self, data: bytes, gallery: str, source: str = "the uploaded image", by: str | None = None
    ) -> Query:
        """Give image bytes as a query against `gallery`; a file PIL cannot use is a QueryError."""
        from tuwen.encode import encode_picture

        try:
            picture = decode_image(data, source, self.max_image_pixels)
        except ImageRejected as rejected:
            raise QueryError(rejected.message) from None
        channels = self.channels_for(layout.IMAGES, gallery, by)
        _, setting, _ = self.scoring(layout.IMAGES, gallery, by)
        # The text in the picture, where a channel matches it: OCR's characters or a sentence encoder.
        reads = (setting and OCR in setting.used) or any(self.channels[c].sentence for c in channels)
        text = self._read_text(picture, source) if reads else ""
        vectors = {
            c: self._embed_text(c, text)
            if self.channels[c].sentence
            else encode_picture(self.model(c), picture, self.channels[c].resolution)
            for c in channels
        }
        known_id, known_in = self._known_items.get(("digest", content_digest(data)), (None, None))
        return Query(layout.IMAGES, source, vectors, text=text, known_id=known_id, known_in=known_in)

    def item_query(self, collection: str, item_id: str) -> Query:
        """Give one of the run's items as a query ("more like this"), from its stored embeddings."""
        if collection not in self.collections:
            raise UnknownGallery(f"no collection {collection!r} in this run")
        source = self.collections[collection]
        row = source.row_of.get(item_id)
        if row is None:
            raise QueryError(f"{collection} has no encoded item {item_id!r}")
        vectors = {c: m[row] for c, m in source.embeddings.items()}
        text = source.texts.get(item_id, "")
        return Query(source.kind, item_id, vectors, text=text, known_id=item_id, known_in=collection)

    def _index_known_items(self) -> dict[tuple[str, str], tuple[str, str]]:
        """Give the run's item for each caption and image content, so that a query that is one
        of the run's own (typed again, or uploaded) is marked against ground truth; a task's
        query collection wins over another holding the same content."""
        queries = [t.queries for t in self.declared.tasks.values()]
        ordered = sorted(self.collections.values(), key=lambda c: c.name in queries)
        known = {}
        for collection in ordered:
            for item_id, caption in collection.captions.items():
                known[("caption", caption.strip())] = (item_id, collection.name)
            for item_id, (_, digest) in collection.files.items():
                known[("digest", digest)] = (item_id, collection.name)
        return known

    def _read_text(self, picture, source: str) -> str:
        from tuwen.ocr import read_picture_text, run_ocr_engine

        with self._model_lock:
            if self._ocr_engine is None:
                self._ocr_engine = run_ocr_engine(self.run)
        return read_picture_text(self._ocr_engine, picture, source).text

    def _lexical_index(self, gallery: Collection):
        from tuwen.lexical import BM25Index

        with self._model_lock:
            if gallery.name not in self._lexical:
                self._lexical[gallery.name] = BM25Index([gallery.texts.get(i, "") for i in gallery.ids])
            return self._lexical[gallery.name]

    def search(self, query: Query, gallery_name: str, k: int, by: str | None = None) -> dict:
        """Give the top-`k` of `query` in a gallery as JSON-ready data (`by`: one channel alone)."""
        from tuwen.retrieval import ranked_top

        gallery = self.gallery(gallery_name)
        ranking, setting, not_applied = self.scoring(query.kind, gallery_name, by)
        if ranking not in query.vectors:
            raise QueryError(f"{query.label}: no embedding of model {self.channels[ranking].tag}")
        keep = min(k, len(gallery.ids))
        if keep == 0:
            return self._answer(query, gallery, ranking, setting, not_applied, [])
        if setting is None:
            # As tuwen.retrieval.shard_topk scores: float32 cosines over id-sorted rows.
            scores = query.vectors[ranking].astype(np.float32)[None, :] @ gallery.embeddings[ranking].T
            blocks = {ranking: scores[0]}
        else:
            # As tuwen.fusion scores a block: each channel in float64, then the weighted sum.
            blocks = {}
            for name in setting.used:
                if name == OCR:
                    blocks[name] = self._lexical_scores(query.text, gallery)
                else:
                    blocks[name] = _cosines64(gallery, query, name)
            if ranking not in blocks:
                blocks[ranking] = _cosines64(gallery, query, ranking)
            total = sum(weight * blocks[name] for name, weight in setting.weights if weight)
            scores = np.asarray(total, dtype=np.float64)[None, :]
        _, cols, values, ranks = ranked_top(scores, keep)
        hits = []
        for col, value, rank in zip(cols, values, ranks, strict=True):
            parts = (
                [(name, float(weight * blocks[name][col])) for name, weight in setting.weights if weight]
                if setting
                else []
            )
            cosine = float(blocks[ranking][col])
            hits.append(Hit(int(rank) + 1, str(gallery.ids[col]), float(value), cosine, parts))
        return self._answer(query, gallery, ranking, setting, not_applied, hits)

    def _lexical_scores(self, text: str, gallery: Collection) -> np.ndarray:
        from tuwen.lexical import normalised_by_query

        if not text:
            return np.zeros(len(gallery.ids))
        index = self._lexical_index(gallery)
        return normalised_by_query(index.scores([text])).toarray()[0]

    def _answer(self, query, gallery, ranking, setting, not_applied, hits) -> dict:
        task = self.task_for(query.kind, gallery.name)
        truth = None
        if task and query.known_id is not None and query.known_in == self.declared.tasks[task].queries:
            truth = self.positives.get(task, {}).get(query.known_id)
        answer = {
            "query": {"kind": query.kind, "text" if query.kind == layout.TEXTS else "image": query.label},
            "gallery": gallery.name,
            "model": self.channels[ranking].tag,
            "ranked_by": setting.label
            if setting
            else ranking
            if self.channels[ranking].sentence
            else "cosine",
            "not_applied": not_applied,
            "loaded_at": self.loaded_at,
            "hits": [],
        }
        if query.known_id is not None:
            answer["query"]["id"] = query.known_id
            answer["query"]["collection"] = query.known_in
        for hit in hits:
            item = {"rank": hit.rank, "id": hit.id, "score": round(hit.score, 6)}
            item["cosine"] = round(hit.cosine, 6)
            if setting:
                item["parts"] = [[name, round(value, 6)] for name, value in hit.parts]
            elif self.channels[ranking].sentence:
                item["parts"] = [[ranking, round(hit.score, 6)]]
            if gallery.holds_images:
                item["image"] = f"/image/{gallery.name}/{hit.id}"
            else:
                item["caption"] = gallery.captions.get(hit.id, "")
            if truth is not None:
                item["correct"] = hit.id in truth
            answer["hits"].append(item)
        return answer


def _cosines64(gallery: Collection, query: Query, channel: str) -> np.ndarray:
    """Give a channel's cosines of the query with every gallery item, in float64 as fusion scores."""
    return gallery.embeddings[channel].astype(np.float64) @ query.vectors[channel].astype(np.float64)


class LiveRun:
    """The index of a run, rebuilt when the run's files change (an incremental rerun added
    shards or a model), while the old one keeps answering until the new one is ready."""

    def __init__(self, run: Path, check_every: float = 2.0, **options):
        self.run = run
        self.options = options
        self.check_every = check_every
        self.index = RunIndex(run, **options)
        self._checked = time.monotonic()
        self._rebuilding = threading.Lock()
        self.reload_error: str | None = None
        self._failed: tuple | None = None  # the files a rebuild failed on: not retried until they change

    def current(self) -> RunIndex:
        """Give the newest index; starts a rebuild in the background when the files changed."""
        now = time.monotonic()
        if now - self._checked >= self.check_every:
            self._checked = now
            files = signature(self.run)
            if files not in (self.index.signature, self._failed) and self._rebuilding.acquire(blocking=False):
                threading.Thread(target=self._rebuild, daemon=True).start()
        return self.index

    def _rebuild(self) -> None:
        try:
            fresh = RunIndex(self.run, **self.options)
            # Models already loaded stay loaded when their weights are the same.
            for channel, model in self.index.models.items():
                old, new = self.index.channels.get(channel), fresh.channels.get(channel)
                if old and new and old.tag == new.tag:
                    fresh.models[channel] = model
            self.index = fresh
            self.reload_error = None
            LOG.info("reloaded %s: %d galleries", self.run, len(fresh.collections))
        except Exception as error:  # noqa: BLE001 - a half-written rerun: keep answering from the old files
            self.reload_error = f"{type(error).__name__}: {error}"
            self._failed = signature(self.run)
            LOG.warning("kept the previous index of %s: %s", self.run, self.reload_error)
        finally:
            self._rebuilding.release()
