"""What is exported of a finished run: each gallery's current items with the embeddings of
the model that ranks it (its task's, or the run's first model), what each item is, and the
text read in its photos where the run reads it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tuwen.errors import TuwenError
from tuwen.files.parquet import read_features
from tuwen.finished.items import image_texts, shown_items
from tuwen.finished.reader import read_finished


class ExportError(TuwenError):
    """A run or a target that cannot take the export, and why."""


@dataclass(frozen=True)
class Gallery:
    """What is exported of one gallery: its kind, the ranking model's tag and feature shards,
    each current item's digest, and what each item is (a caption or an image file)."""

    name: str
    kind: str
    tag: str
    shards: list[Path]
    current: pd.Series  # id -> digest
    shown: pd.Series  # id -> caption or image path
    read: pd.Series | None = None  # id -> the text OCR read in the image (a run that reads it)

    def rows(self) -> Iterator[tuple[str, list[str], np.ndarray]]:
        """Give each shard's current rows: (shard, ids, embeddings)."""
        for path in self.shards:
            shard = read_features(path)
            ids = np.asarray(shard.ids, dtype=object)
            keep = self.current.reindex(ids).to_numpy(dtype=object) == np.asarray(shard.digests, dtype=object)
            yield path.stem, list(ids[keep]), shard.embeddings[keep]


def run_galleries(run: Path, only: list[str] | None = None) -> list[Gallery]:
    """Give the finished run's galleries (its tasks' galleries, or every collection of a run
    with no task), each with the model that ranks it."""
    finished = read_finished(run)
    names = finished.declared.galleries()
    if only:
        unknown = sorted(set(only) - set(finished.collections))
        if unknown:
            known = ", ".join(finished.collections)
            raise ExportError(f"{run}: no collection {', '.join(unknown)} (collections: {known})")
        names = only
    galleries = []
    for name in names:
        files = finished.collections[name]
        channel = finished.channels[finished.channel_of(name)]
        shards = files.features.get(channel.name, [])
        if not shards:
            raise ExportError(f"{run}: gallery {name!r} has no feature shards of {channel.tag}")
        current = pd.read_parquet(files.assignment, columns=["id", "digest"]).drop_duplicates(
            "id", keep="last"
        )
        read = pd.Series(image_texts(files), dtype=object) if files.ocr else None
        galleries.append(
            Gallery(
                name,
                files.kind,
                channel.tag,
                shards,
                current.set_index("id")["digest"],
                shown_items(files),
                read,
            )
        )
    return galleries
