"""A finished run's collections held in memory for live search: each collection's current
items with every needed channel's embeddings, its captions, image files and OCR texts.

Everything is read through the run's record (tuwen.finished): only the files of a complete
state, and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tuwen.finished.items import (
    ImageFiles,
    Labels,
    captions,
    current_items,
    find_sorted,
    image_files,
    image_texts,
    places_among,
    string_array,
)
from tuwen.finished.reader import FinishedRun
from tuwen.run.channels import OCR
from tuwen.run.declaration import IMAGES


@dataclass
class LoadedCollection:
    """A collection's current items, sorted by id, with each channel's embeddings. Per-item
    columns are numpy arrays (ids and strings as tuwen.finished.items.STRINGS), not Python
    objects: a server of 10M photos holds them in ~1 GB, not ~8."""

    name: str
    kind: str
    ids: np.ndarray  # STRINGS, sorted
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # channel name: N x D float32
    captions: dict[str, str] = field(default_factory=dict)  # text collections
    files: ImageFiles | None = None  # image collections: id -> (path, digest)
    texts: dict[str, str] = field(default_factory=dict)  # OCR text read in each image (when the run has it)
    tags: dict[str, list[str]] | None = None  # each photo's zero-shot labels, best first (a tagged run)
    # An image collection's photos by row (id order): the day taken (EXIF, else the file's
    # mtime; YYYY-MM-DD, "" where unknown) and their format in capitals, for filters.
    taken: Labels | None = None
    formats: Labels | None = None
    shards: Labels | None = None  # each item's shard, where a channel's embeddings stay on disk

    @property
    def holds_images(self) -> bool:
        return self.kind == IMAGES

    def row(self, item_id: str) -> int | None:
        """Give an item's row (column in a search), or None when it is not a current item."""
        row = int(find_sorted(self.ids, string_array([item_id]))[0])
        return row if row >= 0 else None


def needed_channels(run: FinishedRun) -> set[str]:
    """Give the channels whose embeddings the server holds: those any ranking uses, and every
    sentence channel (for search by meaning in any gallery that has its shards)."""
    needed = {name for ranking in run.rankings.values() for name in ranking.channels}
    needed |= {run.default_channel} | {name for name, channel in run.channels.items() if channel.sentence}
    needed.discard(OCR)
    return needed


def read_collections(
    run: FinishedRun,
    needed: set[str],
    only: set[str] | None = None,
    on_disk: dict[str, str] | None = None,
) -> dict[str, LoadedCollection]:
    """Give every encoded collection (or those in `only`) with its current items. `on_disk`:
    a collection's channel whose embeddings stay in its shards (an index searches them)."""
    from tuwen.ranking.channels import embeddings_by_id

    on_disk = on_disk or {}
    collections = {}
    for name, files in run.collections.items():
        if only is not None and name not in only:
            continue
        embeddings = {
            channel: embeddings_by_id([str(s) for s in shards], str(files.assignment))[0]
            for channel, shards in sorted(files.features.items())
            if channel in needed and channel != on_disk.get(name) and shards
        }
        if name in on_disk:
            current = current_items(files)  # sorted by id
            ids, shards = string_array(current["id"]), Labels.of(current["shard"])
            del current
            if embeddings:
                embedded = string_array(sorted(set.intersection(*(set(e) for e in embeddings.values()))))
                held = places_among(ids, embedded) >= 0
                ids, shards = ids[held], shards.subset(held)
            collection = LoadedCollection(name, files.kind, ids)
            collection.shards = shards
        elif embeddings:
            # The items every channel embedded, sorted: ties break by id as in the workflow.
            common = sorted(set.intersection(*(set(e) for e in embeddings.values())))
            collection = LoadedCollection(name, files.kind, string_array(common))
        else:
            continue
        listed = collection.ids.tolist()
        for channel, by_id in embeddings.items():
            dim = len(next(iter(by_id.values()))) if by_id else 0
            matrix = np.stack([by_id[i] for i in listed]) if listed else np.zeros((0, dim))
            collection.embeddings[channel] = np.ascontiguousarray(matrix, dtype=np.float32)
        if collection.holds_images:
            collection.files = image_files(run, files).sharing(collection.ids)
            collection.texts = image_texts(files)
            collection.taken, collection.formats = photo_attributes(files, collection.ids)
            if files.tags is not None:
                from tuwen.ranking.tags import read_tags

                collection.tags = read_tags(files.tags)
        else:
            collection.captions = captions(files)
            collection.texts = collection.captions
        collections[name] = collection
    return collections


def photo_attributes(files, ids: np.ndarray) -> tuple[Labels, Labels]:
    """Give each photo's date (EXIF DateTimeOriginal, else its file's modification time, as
    ingest recorded them; ISO 8601; "" where neither is known) and format (JPEG, PNG, ...),
    in the order of `ids`."""
    import pandas as pd

    manifest = pd.read_parquet(files.manifest)
    if "status" in manifest:
        manifest = manifest[manifest["status"] == "ok"]
    manifest = manifest.drop_duplicates("image_id", keep="last").reset_index(drop=True)
    places = places_among(ids, manifest["image_id"])  # each id's manifest row
    unknown = pd.Series(None, index=manifest.index, dtype="object")
    taken = manifest.get("taken", unknown)
    if "mtime_ns" in manifest:
        stamps = pd.to_datetime(manifest["mtime_ns"].astype("float64"), unit="ns")
        modified = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S")
    else:
        modified = unknown
    dates = taken.where(taken.notna(), modified).fillna("")
    formats = manifest["format"].fillna("") if "format" in manifest else unknown.fillna("")
    # Days and capitals once, at load: a filter compares them as they are.
    return Labels.of(dates.str[:10]).at(places), Labels.of(formats.str.upper()).at(places)


class KnownItems:
    """The run's item for each caption and image content, so that a query that is one of the
    run's own (typed again, or uploaded) is known; a task's query collection wins over another
    holding the same content. Images are found by digest in each collection's files."""

    NONE: tuple[None, None] = (None, None)

    def __init__(self, run: FinishedRun, collections: dict[str, LoadedCollection]):
        queries = [t.queries for t in run.declared.tasks.values()]
        # Later wins: a task's query collection last.
        ordered = sorted(collections.values(), key=lambda c: c.name in queries)
        self._ordered = ordered[::-1]  # most wanted first
        self._captions: dict[str, tuple[str, str]] = {}
        for collection in ordered:
            for item_id, caption in collection.captions.items():
                self._captions[caption.strip()] = (item_id, collection.name)

    def caption(self, text: str) -> tuple[str, str] | tuple[None, None]:
        """Give (item id, collection) of the run's caption `text`, or (None, None)."""
        return self._captions.get(text.strip(), self.NONE)

    def image(self, digest: str) -> tuple[str, str] | tuple[None, None]:
        """Give (item id, collection) of the run's image of content `digest`, or (None, None)."""
        for collection in self._ordered:
            found = collection.files.with_digest(digest) if collection.files is not None else None
            if found is not None:
                return found, collection.name
        return self.NONE


def release_freed_memory() -> None:
    """Give the memory that loading freed back to the system: Arrow's allocator (mimalloc) and
    glibc's keep what was freed for later use, and loading reads far more than it keeps (10M
    items: 5.2 GB of the server's own memory after loading, 2.5 GB once released)."""
    import contextlib
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator keeps what it keeps
        ctypes.CDLL("libc.so.6").malloc_trim(0)
