"""A finished run held in memory for live search, and the ranking of one new query exactly
the way the run's result tables rank the run's own queries (`tuwen.ranking.scoring`).

What ranks a query against a gallery:
- the run's task of that kind and gallery (text → 附件2's images, image → 附件3's captions)
  ranks by that task's `Ranking`: the ranking model's cosine, or the fusion chosen on
  validation, re-ranked against the task's query bank when the recipe re-ranks. A query
  that is one of the task's own gets exactly its row of the result table; a new one is
  added to the bank.
- any other pairing (text → captions, image → images, ...) ranks by the ranking model's
  cosine; `by=` ranks by one channel alone.
- `by=hybrid` (the default for a text query in a gallery no task ranks, in a run that reads
  the text in its photos: keywords.enabled) ranks by keyword and meaning together: BM25 of
  the text read in each item, the ranking model's cosine and any sentence channel, fused by
  reciprocal rank (tuwen.ranking.hybrid); each hit says which lists found it.
- a gallery with a served approximate index (tuwen.ranking.index) is searched through it:
  its candidates are then scored as above, and the answer says `exact: false`.
Ties break by id everywhere, as in the workflow.

What is loaded is a complete state of the run (tuwen.finished): `LiveRun` keeps answering
from it while the run is rerun, and moves to the new state once the rerun has finished.
Loading is tuwen.serve.loading's, the answer's format tuwen.serve.answers'.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from tuwen.errors import TuwenError
from tuwen.export.milvus import OCR_SPARSE_FIELD
from tuwen.files.images import ImageRejected, content_digest, decode_image
from tuwen.finished.items import ground_truths
from tuwen.finished.reader import FinishedRun, read_finished
from tuwen.finished.record import RunNotFinished, record_stamp
from tuwen.ranking.hybrid import DEPTH, RankedList, ranked_list, reciprocal_rank_fusion
from tuwen.ranking.recall import read_positives
from tuwen.ranking.scoring import Hit, Ranking, cosines, rank_query
from tuwen.report.notices import untrained_notice
from tuwen.run import layout
from tuwen.run.channels import OCR
from tuwen.run.declaration import IMAGES, TEXTS
from tuwen.run.schema import schema_default
from tuwen.serve.answers import Query, answer
from tuwen.serve.approximate import MilvusGallery
from tuwen.serve.batching import TextBatches
from tuwen.serve.loading import (
    KnownItems,
    LoadedCollection,
    needed_channels,
    read_collections,
    release_freed_memory,
)

LOG = logging.getLogger(__name__)
__all__ = [
    "HYBRID",
    "Filters",
    "LiveRun",
    "LoadedRun",
    "Query",
    "QueryError",
    "RunNotFinished",
    "UnknownGallery",
]
# by=hybrid: keyword and meaning together, fused by reciprocal rank.
HYBRID = "hybrid"


class QueryError(TuwenError):
    """A query the run cannot answer (bad input): the server's 400."""


@dataclass(frozen=True)
class Filters:
    """Which photos a search may answer with: a zero-shot tag, a sub-folder (an id prefix,
    `2024/05/`), a date range (YYYY-MM-DD, both ends included: EXIF DateTimeOriginal, else the
    file's modification time) and a format (JPEG, PNG, HEIF, ...)."""

    tag: str | None = None
    prefix: str | None = None
    after: str | None = None
    before: str | None = None
    format: str | None = None

    def __post_init__(self) -> None:
        for name in ("after", "before"):
            value = getattr(self, name)
            if value is not None:
                try:
                    datetime.date.fromisoformat(value)
                except ValueError:
                    raise QueryError(f"{name} must be a date YYYY-MM-DD, got {value!r}") from None

    def __bool__(self) -> bool:
        return any(value is not None for value in vars(self).values())  # (asked() costs 35 us)

    def asked(self) -> dict:
        """Give the filters asked for, by name."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class UnknownGallery(TuwenError):
    """A gallery name the run does not hold: the server's 404."""


class LoadedRun:
    """Everything a finished run needs to answer queries, loaded once from its files. `only`:
    the galleries to load (with the query collections of their tasks); default all."""

    def __init__(
        self,
        finished: FinishedRun,
        ground_truth: Path | None = None,
        max_image_pixels: int | None = None,
        only: set[str] | None = None,
        milvus: str | None = None,
        milvus_prefix: str = "tuwen_",
        backend: str | None = None,
    ):
        self.finished = finished
        self.backend = backend  # what encodes a query (choose_backend; None: encode.backend's default)
        self.run = finished.folder
        self.milvus = (milvus, milvus_prefix) if milvus else None
        self._milvus_client = None
        self.loaded_at = time.time()
        self.declared = finished.declared
        self.notice = untrained_notice(self.declared)  # "" unless it ranks with random weights
        self.channels = finished.channels
        if only is not None:
            only = set(only) | {t.queries for t in self.declared.tasks.values() if t.gallery in only}
        indexed = self._indexed_channels(only)
        fused = {t.gallery for n, t in self.declared.tasks.items() if finished.rankings[n].recipe}
        # A gallery its index searches keeps that channel's embeddings on disk, unless a
        # fusion recipe scores its candidates (exactly, from the embeddings).
        on_disk = {name: channel for name, channel in indexed.items() if name not in fused}
        self.collections = read_collections(finished, needed_channels(finished), only, on_disk)
        self.approximate = self._read_indexes(indexed)
        self._known_items = KnownItems(finished, self.collections)
        self.models: dict[str, object] = {}
        self.backends: dict[str, str] = {}  # each loaded CLIP channel's: torch or onnxruntime
        self._model_lock = threading.Lock()
        self._text_batches: dict[str, TextBatches] = {}
        self.positives = {
            task: read_positives(t) for task, t in ground_truths(finished, ground_truth).items()
        }
        # The run's own acceptance rule for images (the decompression-bomb guard) by default.
        self.max_image_pixels = max_image_pixels or finished.setting("ingest")["ingest"]["max_image_pixels"]
        self._ocr_engine = None
        self._lexical: dict[str, object] = {}
        self._text_rows: dict[str, np.ndarray] = {}
        release_freed_memory()

    @classmethod
    def open(cls, run: Path, **options) -> LoadedRun:
        """Give the finished run in folder `run`, loaded (RunNotFinished when it has none)."""
        return cls(read_finished(run), **options)

    def _indexed_channels(self, only: set[str] | None) -> dict[str, str]:
        """Give the galleries that have an approximate index of their ranking channel (in
        Milvus when the server is given one: every gallery it may hold)."""
        if self.milvus:
            return self._milvus_channels(only)
        from tuwen.serve.approximate import read_description

        indexed = {}
        for name, path in self.finished.indexes.items():
            if only is None or name in only:
                described = read_description(path)
                channel = self.finished.channel_of(name)
                if described.get("index") and described.get("model_tag") == self.channels[channel].tag:
                    indexed[name] = channel
        return indexed

    def _milvus_channels(self, only: set[str] | None) -> dict[str, str]:
        """Give the galleries the server's Milvus holds with their ranking model's embeddings."""
        from tuwen.export.galleries import ExportError
        from tuwen.export.milvus import milvus_client, milvus_name

        assert self.milvus is not None
        try:
            self._milvus_client = client = milvus_client(self.milvus[0])
        except ExportError as error:
            raise RunNotFinished(str(error)) from None
        held = {}
        for name in self.finished.collections:
            channel = self.finished.channel_of(name)
            collection = milvus_name(self.milvus[1], name)
            if (only is None or name in only) and client.has_collection(collection):
                properties = client.describe_collection(collection).get("properties", {})
                if properties.get("tuwen.model_tag") == self.channels[channel].tag:
                    held[name] = channel
        return held

    def _read_indexes(self, indexed: dict[str, str]) -> dict:
        from tuwen.serve.approximate import read_gallery_index, read_milvus_gallery

        client = self._milvus_client
        found = {}
        for name, channel in indexed.items():
            if name in self.collections:
                ids, tag = self.collections[name].ids, self.channels[channel].tag
                if client is not None:
                    assert self.milvus is not None
                    candidates = self._index_setting("candidates")
                    found[name] = read_milvus_gallery(*self.milvus, name, channel, ids, client, candidates)
                else:
                    found[name] = read_gallery_index(self.finished, name, channel, tag, ids)
        return {name: index for name, index in found.items() if index is not None}

    def _index_setting(self, key: str):
        """Give one of the run's index settings (the schema's default where it has no index)."""
        if "index_search" in self.finished.settings:
            return self.finished.setting("index_search")["index"][key]
        return schema_default(f"index.{key}")

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
                "by": self.rankings_of(c.name),
                "search": self.approximate[c.name].answer_note()
                if c.name in self.approximate
                else {"exact": True},
                # Whether the run found its duplicates (/api/duplicates), and the labels its
                # photos are tagged with, for a tag filter (a tagged run).
                "duplicates": self.finished.collections[c.name].duplicates is not None,
                **({"tags": sorted({t for labels in c.tags.values() for t in labels})} if c.tags else {}),
            }
            for c in self.collections.values()
        ]

    def duplicates(self, name: str) -> dict:
        """Give an image collection's groups of exact and near copies (tuwen.data.duplicates)."""
        files = self.finished.collections.get(name)
        if files is None:
            raise UnknownGallery(f"no collection {name!r} in this run")
        if files.duplicates is None:
            raise QueryError(f"{name}: this run does not find duplicates (set duplicates.enabled: true)")
        table = pd.read_csv(files.duplicates, dtype={"id": str, "first": str})
        groups = [
            {
                "group": int(number),
                "items": [
                    {
                        "id": row["id"],
                        "kind": row["kind"],
                        "distance": int(row["distance"]),
                        "image": f"/image/{name}/{row['id']}",
                    }
                    for row in group.to_dict("records")
                ],
            }
            for number, group in table.groupby("group", sort=True)
        ]
        return {"gallery": name, "groups": groups, "loaded_at": self.loaded_at}

    def default_gallery(self, kind: str) -> str:
        """Give the gallery that the run's task for queries of `kind` searches."""
        return self.finished.default_gallery(kind)

    def gallery(self, name: str) -> LoadedCollection:
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
        """Give what a query may be ranked by in `gallery` (`by=`): each channel it embeds alone,
        and `hybrid` where its items have text (captions, or what OCR read in the photos)."""
        indexed = [self.approximate[gallery].channel] if gallery in self.approximate else []
        hybrid = [HYBRID] if self.has_text(gallery) else []
        return sorted({*self.gallery(gallery).embeddings, *indexed}) + hybrid

    def has_text(self, gallery: str) -> bool:
        """Whether a keyword can find items of `gallery`: any of them has a caption or read text."""
        return bool(self.text_rows(gallery).any())

    def text_rows(self, gallery: str) -> np.ndarray:
        """Give, per column of `gallery`, whether its item has text (found once, at first use)."""
        with self._model_lock:
            if gallery not in self._text_rows:
                loaded = self.gallery(gallery)
                texts = [loaded.texts.get(item, "").strip() for item in loaded.ids]
                self._text_rows[gallery] = np.array([bool(text) for text in texts], dtype=bool)
            return self._text_rows[gallery]

    def ranked_by(self, query_kind: str, gallery: str, by: str | None) -> str | None:
        """Give what a query is ranked by when `by` is not given: `hybrid` for a text query in a
        gallery of photos whose text the run reads and that no task ranks (a task's gallery
        ranks as its table does); else `by` as given."""
        if by is not None or query_kind != TEXTS or not self.declared.keywords:
            return by
        if self.task_for(query_kind, gallery) is None and self.gallery(gallery).holds_images:
            return HYBRID if self.has_text(gallery) else None
        return None

    def scoring(self, query_kind: str, gallery: str, by: str | None = None) -> Ranking:
        """Give how a query of `query_kind` is ranked in `gallery`: its task's ranking (the result
        table's), the run's ranking model's cosine, or `by` one channel's cosine alone (e.g.
        text:use-m3, by meaning)."""
        if by == HYBRID:
            if query_kind != TEXTS:
                raise QueryError("by=hybrid ranks a text query (its words against the items' text)")
            if not self.has_text(gallery):
                raise QueryError(
                    f"{gallery}: no text was read in its photos, so no keyword can find them "
                    "(set keywords.enabled: true and rerun)"
                )
            # The meaning list is the ranking model's cosine; sentence channels join it.
            return Ranking(self.finished.default_channel)
        if by is not None:
            if by not in self.rankings_of(gallery):
                known = ", ".join(self.rankings_of(gallery))
                raise QueryError(f"{gallery} cannot be ranked by {by!r} (by: {known})")
            return Ranking(by)
        task = self.task_for(query_kind, gallery)
        return self.finished.rankings[task] if task else Ranking(self.finished.default_channel)

    # ---- queries --------------------------------------------------------------------

    def model(self, channel: str):
        """Give a channel's model, loaded once (torch is imported on first use)."""
        with self._model_lock:
            if channel not in self.models and self.channels[channel].sentence:
                from tuwen.text.sentences import EncoderMissing, load_sentence_encoder

                described = self.channels[channel]
                try:
                    self.models[channel] = load_sentence_encoder(
                        described.model, described.weights_dir or None
                    )
                except EncoderMissing as error:
                    raise RunNotFinished(str(error)) from None
            if channel not in self.models:
                self.models[channel], self.backends[channel] = self._load_clip(channel)
            return self.models[channel]

    def _load_clip(self, channel: str) -> tuple[object, str]:
        """Give a CLIP channel's encoder: its exported towers in ONNX Runtime where the run
        exported them and `choose_backend` picks them, else cn_clip's model in torch; and which."""
        from tuwen.clip.architectures import ModelError
        from tuwen.clip.cards import ModelCard
        from tuwen.clip.encode import load_encoder
        from tuwen.clip.onnx_towers import OnnxClip

        card = ModelCard.read(self.channels[channel].card)
        towers = self.finished.towers.get(channel)
        try:
            encoder, _, why = load_encoder(
                card,
                "cpu",
                towers if towers is not None and towers.exists() else None,
                self.backend,
                threads=os.cpu_count() or 1,
                checkpoint=card.checkpoint_in(self.run),
            )
        except (ModelError, TuwenError) as error:
            raise RunNotFinished(f"the run's model {card.tag} cannot be loaded: {error}") from None
        backend = "onnxruntime" if isinstance(encoder, OnnxClip) else "torch"
        LOG.info("%s encodes queries by %s: %s", channel, backend, why)
        return encoder, backend

    def warm(self) -> None:
        """Load every model a default query is encoded by and encode one query of each kind
        through it, so that the first answer is as fast as the rest."""
        from PIL import Image

        from tuwen.clip.encode import encode_picture

        picture = Image.new("RGB", (64, 64), (128, 128, 128))
        for kind in (TEXTS, IMAGES):
            if self.declared.default_gallery(kind) is None:
                continue
            for channel in self.channels_for(kind, self.default_gallery(kind)):
                self._embed_text(channel, "预热")
                if not self.channels[channel].sentence:
                    encode_picture(self.model(channel), picture, self.channels[channel].resolution)

    def channels_for(self, query_kind: str, gallery: str, by: str | None = None) -> list[str]:
        """Give the channels a query is embedded by (all that score it but OCR; by keyword and
        meaning, every sentence channel of the gallery too)."""
        by = self.ranked_by(query_kind, gallery, by)
        channels = [c for c in self.scoring(query_kind, gallery, by).channels if c != OCR]
        if by == HYBRID:
            channels += self._sentence_channels(gallery)
        return list(dict.fromkeys(channels))

    def _sentence_channels(self, gallery: str) -> list[str]:
        embedded = self.gallery(gallery).embeddings
        return sorted(c for c in embedded if self.channels[c].sentence)

    def _embed_text(self, channel: str, text: str) -> np.ndarray:
        """Give a text's embedding by a channel: a CLIP model's caption, or a sentence encoder's
        (concurrent queries' texts encoded together: tuwen.serve.batching)."""
        batches = self._text_batches.get(channel)
        if batches is None:
            model = self.model(channel)
            if self.channels[channel].sentence:
                encode_many = model.encode
            else:
                from tuwen.clip.encode import encode_captions

                encode_many = partial(encode_captions, model)
            with self._model_lock:
                batches = self._text_batches.setdefault(channel, TextBatches(encode_many))
        return batches.encode(text)

    def text_query(self, text: str, gallery: str, by: str | None = None) -> Query:
        """Give a caption as a query against `gallery` (every channel that ranks it encoded)."""
        text = text.strip()
        if not text:
            raise QueryError("the query text is empty")
        if len(text) > 1000:
            raise QueryError(f"the query text has {len(text)} characters; at most 1000")
        channels = self.channels_for(TEXTS, gallery, by)
        for channel in channels:
            self.model(channel)  # loading a model is not the query's encoding
        started = time.perf_counter()
        vectors = {c: self._embed_text(c, text) for c in channels}
        encode_ms = (time.perf_counter() - started) * 1000
        known_id, known_in = self._known_items.caption(text)
        return Query(
            TEXTS, text, vectors, text=text, known_id=known_id, known_in=known_in, encode_ms=encode_ms
        )

    def image_query(
        self, data: bytes, gallery: str, source: str = "the uploaded image", by: str | None = None
    ) -> Query:
        """Give image bytes as a query against `gallery`; a file PIL cannot use is a QueryError."""
        from tuwen.clip.encode import encode_picture

        ranking = self.scoring(IMAGES, gallery, by)
        channels = [c for c in ranking.channels if c != OCR]
        for channel in channels:
            self.model(channel)
        started = time.perf_counter()
        try:
            picture = decode_image(data, source, self.max_image_pixels)
        except ImageRejected as rejected:
            raise QueryError(rejected.message) from None
        known_id, known_in = self._known_items.image(content_digest(data))
        # The text in the picture, where a channel matches it: OCR's characters or a sentence
        # encoder; one of the run's images has it read already.
        reads = OCR in ranking.channels or any(self.channels[c].sentence for c in channels)
        stored = self.collections[known_in].texts if known_in in self.collections else {}
        if not reads:
            text = ""
        elif known_id in stored:
            text = stored[known_id]
        else:
            text = self._read_text(picture, source)
        vectors = {
            c: self._embed_text(c, text)
            if self.channels[c].sentence
            else encode_picture(self.model(c), picture, self.channels[c].resolution)
            for c in channels
        }
        encode_ms = (time.perf_counter() - started) * 1000
        return Query(
            IMAGES, source, vectors, text=text, known_id=known_id, known_in=known_in, encode_ms=encode_ms
        )

    def item_query(self, collection: str, item_id: str) -> Query:
        """Give one of the run's items as a query ("more like this"), from its stored embeddings."""
        if collection not in self.collections:
            raise UnknownGallery(f"no collection {collection!r} in this run")
        source = self.collections[collection]
        row = source.row(item_id)
        if row is None:
            raise QueryError(f"{collection} has no encoded item {item_id!r}")
        vectors = {c: m[row] for c, m in source.embeddings.items()}
        if collection in self.approximate and source.shards is not None:
            channel = self.approximate[collection].channel
            vectors[channel] = self._stored_vector(source, channel, item_id, source.shards[row])
        text = source.texts.get(item_id, "")
        return Query(source.kind, item_id, vectors, text=text, known_id=item_id, known_in=collection)

    def _stored_vector(
        self, collection: LoadedCollection, channel: str, item_id: str, shard: str
    ) -> np.ndarray:
        """Give an item's embedding kept on disk: the row of its feature shard."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path = self.run / layout.features(self.channels[channel].tag, collection.name, shard)
        table = pq.read_table(path, columns=["id", "embedding"])
        row = pc.index(table.column("id"), item_id).as_py()
        return np.asarray(table.column("embedding")[row].values.to_numpy(), dtype=np.float32)

    def _read_text(self, picture, source: str) -> str:
        from tuwen.text.ocr import read_picture_text, run_ocr_engine

        with self._model_lock:
            if self._ocr_engine is None:
                self._ocr_engine = run_ocr_engine(self.run)
        return read_picture_text(self._ocr_engine, picture, source).text

    def _lexical_index(self, gallery: LoadedCollection):
        from tuwen.text.lexical import BM25Index

        with self._model_lock:
            if gallery.name not in self._lexical:
                self._lexical[gallery.name] = BM25Index([gallery.texts.get(i, "") for i in gallery.ids])
            return self._lexical[gallery.name]

    def tagged(self, gallery: LoadedCollection, tag: str) -> np.ndarray:
        """Give the gallery's columns (rows in id order) of the photos tagged `tag`."""
        if gallery.tags is None:
            raise QueryError(f"{gallery.name} has no tags (the run tags photos with tags.labels)")
        columns = [row for row, item in enumerate(gallery.ids) if tag in gallery.tags.get(item, ())]
        if not columns:
            known = sorted({label for labels in gallery.tags.values() for label in labels})
            shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
            raise QueryError(f"no photo of {gallery.name} is tagged {tag!r} (tags: {shown})")
        return np.asarray(columns, dtype=np.int64)

    def allowed(self, gallery: LoadedCollection, filters: Filters) -> np.ndarray | None:
        """Give the gallery's columns that pass every filter (None: no filter asked)."""
        if not filters:
            return None
        keep = np.ones(len(gallery.ids), dtype=bool)
        if filters.tag:
            keep &= np.isin(np.arange(len(gallery.ids)), self.tagged(gallery, filters.tag))
        photos = [filters.prefix, filters.after, filters.before, filters.format]
        if any(value is not None for value in photos):
            if gallery.taken is None or gallery.formats is None:
                raise QueryError(
                    f"{gallery.name} holds captions: folder, date and format filters are for photos"
                )
            if filters.prefix is not None:
                keep &= np.strings.startswith(gallery.ids, filters.prefix)
            days = gallery.taken.names
            if filters.after is not None:
                keep &= gallery.taken.where(days >= filters.after)
            if filters.before is not None:
                keep &= gallery.taken.where((days <= filters.before) & (days != ""))
            if filters.format is not None:
                keep &= gallery.formats.where(gallery.formats.names == filters.format.upper())
        return np.flatnonzero(keep).astype(np.int64)

    def search(
        self, query: Query, gallery_name: str, k: int, by: str | None = None, filters: Filters | None = None
    ) -> dict:
        """Give the top-`k` of `query` in a gallery as JSON-ready data (`by`: one channel alone;
        `filters`: only the photos that pass them, chosen before ranking)."""
        filters = filters or Filters()
        started = time.perf_counter()
        gallery = self.gallery(gallery_name)
        allowed = self.allowed(gallery, filters)
        by = self.ranked_by(query.kind, gallery_name, by)
        ranking = self.scoring(query.kind, gallery_name, by)
        if ranking.channel not in query.vectors:
            raise QueryError(f"{query.label}: no embedding of model {self.channels[ranking.channel].tag}")
        task = self.task_for(query.kind, gallery_name)
        queries = self.declared.tasks[task].queries if task else None
        member = query.known_id is not None and query.known_in == queries
        columns, search, blocks = None, {"exact": True, "index": "exact"}, {}
        approximate = self.approximate.get(gallery_name)
        if by == HYBRID:
            hits, search = self._hybrid_hits(query, gallery, k, allowed)
        elif approximate is not None and approximate.channel == ranking.channel:
            cross_modal = (query.kind == TEXTS) == gallery.holds_images
            columns, index_scores = approximate.search(
                query.vectors[ranking.channel], over_fetch(k, gallery, allowed), cross_modal
            )
            search = approximate.answer_note(cross_modal)
            if allowed is not None:
                kept = np.isin(columns, allowed)
                columns, index_scores = columns[kept], index_scores[kept]
            if ranking.channel not in gallery.embeddings:  # the index's scores are all there is
                blocks[ranking.channel] = index_scores
        elif allowed is not None:
            columns = allowed  # exact search filters before ranking
        if by != HYBRID:
            for name in ranking.channels:
                if name not in blocks:
                    blocks[name] = self._scores(name, query, gallery, ranking, columns)
            hits = rank_query(blocks, ranking, k, columns, member)
        truth = (
            self.positives.get(task, {}).get(query.known_id) if member and task and query.known_id else None
        )
        result = answer(
            query, gallery, gallery.ids, ranking, self.channels, hits, search, truth, self.loaded_at
        )
        if by == HYBRID:
            result["ranked_by"] = HYBRID
        if allowed is not None:
            result["filter"] = {
                **filters.asked(),
                "matching": int(len(allowed)),
                "fewer_than_k": len(hits) < k,
            }
        search_ms = (time.perf_counter() - started) * 1000
        # The query's encoding is part of what a user waits for: the answer says how much.
        result["timing"] = {
            "encode_ms": round(query.encode_ms, 3),
            "search_ms": round(search_ms, 3),
            "total_ms": round(query.encode_ms + search_ms, 3),
        }
        encoded = [c for c in query.vectors if c in self.backends] if query.encode_ms else []
        if encoded:
            result["encoded_by"] = {c: self.backends[c] for c in encoded}
        if self.notice:
            result["warning"] = self.notice
        return result

    def _hybrid_hits(
        self, query: Query, gallery: LoadedCollection, k: int, allowed: np.ndarray | None
    ) -> tuple[list[Hit], dict]:
        """Give a text query's top-`k` by keyword and meaning (tuwen.ranking.hybrid) among the
        `allowed` columns (None: all), and how the meaning list was searched."""
        columns = np.arange(len(gallery.ids)) if allowed is None else allowed
        depth = max(DEPTH, k)  # each list is read at least as deep as the answer
        meaning = self.finished.default_channel
        search: dict = {"exact": True, "index": "exact"}
        approximate = self.approximate.get(gallery.name)
        if meaning in gallery.embeddings:
            scores = cosines(gallery.embeddings[meaning][columns], query.vectors[meaning], fused=False)
            lists = [ranked_list(meaning, scores, columns, depth, matched_only=False)]
        else:  # the index holds the meaning channel: its candidates are the list
            assert approximate is not None and approximate.channel == meaning
            cross_modal = gallery.holds_images  # a text query
            found, scores = approximate.search(
                query.vectors[meaning], over_fetch(depth, gallery, allowed), cross_modal
            )
            kept = np.isin(found, columns)
            lists = [ranked_list(meaning, scores[kept], found[kept], depth, matched_only=False)]
            search = approximate.answer_note(cross_modal)
        with_text = columns[self.text_rows(gallery.name)[columns]]
        for channel in self._sentence_channels(gallery.name):
            if channel not in query.vectors:  # a stored item's query, embedded by other channels
                continue
            scores = cosines(gallery.embeddings[channel][with_text], query.vectors[channel], fused=False)
            lists.append(ranked_list(channel, scores, with_text, depth, matched_only=False))
        if isinstance(approximate, MilvusGallery) and approximate.keywords:
            # Milvus's own full-text search (BM25 of jieba's words) gives the keyword list.
            found, scores = approximate.keyword_search(query.text, over_fetch(depth, gallery, allowed))
            kept = np.isin(found, columns)
            lists.append(RankedList(OCR, found[kept][:depth], scores[kept][:depth]))
            search = {**search, "keywords": f"Milvus BM25 ({approximate.name}.{OCR_SPARSE_FIELD})"}
        else:
            keywords = self._lexical_scores(query.text, gallery)[columns]
            lists.append(ranked_list(OCR, keywords, columns, depth, matched_only=True))
        found_cosines = dict(zip(lists[0].columns.tolist(), lists[0].scores.tolist(), strict=True))
        hits = []
        for fused in reciprocal_rank_fusion(lists, k):
            cosine = found_cosines.get(fused.column)
            if cosine is None:
                cosine = self._cosine(query, gallery, meaning, fused.column)
            hits.append(Hit(fused.rank, fused.column, fused.score, cosine, fused.parts, fused.found_by))
        return hits, search

    def _cosine(self, query: Query, gallery: LoadedCollection, channel: str, column: int) -> float:
        """Give one item's cosine with the query by a channel (from its shard where on disk)."""
        if channel in gallery.embeddings:
            row = gallery.embeddings[channel][column]
        else:
            assert gallery.shards is not None
            row = self._stored_vector(gallery, channel, gallery.ids[column], gallery.shards[column])
        return float(np.dot(row.astype(np.float32), query.vectors[channel].astype(np.float32)))

    def _scores(
        self,
        channel: str,
        query: Query,
        gallery: LoadedCollection,
        ranking: Ranking,
        columns: np.ndarray | None,
    ) -> np.ndarray:
        """Give a channel's scores of the query at the gallery's `columns` (None: all)."""
        if channel == OCR:
            scores = self._lexical_scores(query.text, gallery)
            return scores if columns is None else scores[columns]
        matrix = gallery.embeddings[channel]
        rows = matrix if columns is None else matrix[columns]
        return cosines(rows, query.vectors[channel], fused=ranking.recipe is not None)

    def _lexical_scores(self, text: str, gallery: LoadedCollection) -> np.ndarray:
        from tuwen.text.lexical import normalised_by_query

        if not text:
            return np.zeros(len(gallery.ids))
        index = self._lexical_index(gallery)
        return normalised_by_query(index.scores([text])).toarray()[0]


def over_fetch(n: int, gallery: LoadedCollection, allowed: np.ndarray | None) -> int:
    """Give how many hits to ask an index for so that `n` pass a filter that leaves `allowed`
    of the gallery (None: no filter): in proportion, twice over, at most the whole gallery."""
    if allowed is None:
        return n
    return min(len(gallery.ids), n * len(gallery.ids) // max(len(allowed), 1) * 2)


class LiveRun:
    """A run's loaded state, moved to the run's next complete state when a rerun finishes.

    Every `check_every` seconds it looks at the run's record (tuwen.finished.record): a new
    record means a rerun has finished, and the new state is loaded in the background while
    the old one keeps answering. A run being rerun still holds its old record, whose files
    no longer match: nothing is loaded from it until the rerun writes the new one. A state
    that fails to load (or changes while it loads) is not retried until the record changes.
    """

    def __init__(self, run: Path, check_every: float = 2.0, **options):
        self.run = run
        self.options = options
        self.check_every = check_every
        self.loaded = LoadedRun.open(run, **options)
        self._checked = time.monotonic()
        self._rebuilding = threading.Lock()
        self.reload_error: str | None = None
        self._failed: list[int] | None = None  # the record a reload failed on

    def current(self) -> LoadedRun:
        """Give the newest complete state; starts loading a newer one when a rerun has finished."""
        now = time.monotonic()
        if now - self._checked >= self.check_every:
            self._checked = now
            found = record_stamp(self.run)
            fresh = found is not None and found not in (self.loaded.finished.stamp, self._failed)
            if fresh and self._rebuilding.acquire(blocking=False):
                threading.Thread(target=self._reload, daemon=True).start()
        return self.loaded

    def _reload(self) -> None:
        try:
            finished = read_finished(self.run)
            fresh = LoadedRun(finished, **self.options)
            finished.check()  # a rerun that started while this loaded: wait for its record
            # Models already loaded stay loaded when their weights are the same.
            for channel, model in self.loaded.models.items():
                old, new = self.loaded.channels.get(channel), fresh.channels.get(channel)
                if old and new and old.tag == new.tag:
                    fresh.models[channel] = model
                    if channel in self.loaded.backends:
                        fresh.backends[channel] = self.loaded.backends[channel]
            fresh.warm()
            self.loaded = fresh
            self.reload_error = None
            LOG.info("reloaded %s: %d galleries", self.run, len(fresh.collections))
        except Exception as error:  # noqa: BLE001 - whatever failed, the previous state keeps answering
            self.reload_error = f"{type(error).__name__}: {error}"
            self._failed = record_stamp(self.run)
            LOG.warning("kept the previous state of %s: %s", self.run, self.reload_error)
        finally:
            self._rebuilding.release()
