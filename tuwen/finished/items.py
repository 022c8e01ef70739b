"""What a finished run's items are: each collection's current items, its captions, its image
files and the text read in them, and each task's ground truth, from the files its record
names (tuwen.finished.reader)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tuwen.finished.reader import CollectionFiles, FinishedRun
from tuwen.run.declaration import IMAGES, GroundTruth, contest_ground_truth

# Item ids, digests and paths as numpy's variable-width strings: 16 bytes an id of up to 15
# bytes, against ~70 for a Python str in an object array (700 MB at 10M items).
STRINGS = np.dtypes.StringDType()


def string_array(values: Iterable[str] | pd.Series | np.ndarray) -> np.ndarray:
    """Give `values` as a numpy string array (STRINGS)."""
    if isinstance(values, pd.Series):
        values = values.to_numpy(dtype=object)
    return np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=STRINGS)


def places_among(wanted: np.ndarray | pd.Series, among: np.ndarray | pd.Series) -> np.ndarray:
    """Give each `wanted` string's place in `among` (-1: not there; the first where `among`
    repeats it), by pyarrow's hash lookup: one pass over each (10M among 10M: ~3 s)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(wanted), value_set=pa.array(among))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def lower_bounds(sorted_values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Give, for each `wanted` value, the first place in `sorted_values` not below it. A binary
    search by numpy's comparisons: numpy 2.4's searchsorted is wrong on STRINGS of 16 bytes or
    more (it finds none of 200 sorted 16-character strings), its comparisons are right."""
    wanted = np.asarray(wanted, dtype=sorted_values.dtype)
    low = np.zeros(len(wanted), dtype=np.int64)
    high = np.full(len(wanted), len(sorted_values), dtype=np.int64)
    while True:
        open_ = np.flatnonzero(low < high)
        if not len(open_):
            return low
        middle = (low[open_] + high[open_]) // 2
        below = sorted_values[middle] < wanted[open_]
        low[open_[below]] = middle[below] + 1
        high[open_[~below]] = middle[~below]


def find_sorted(sorted_values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Give each `wanted` value's place in `sorted_values` (-1: not there): for a few values
    (a binary search costs ~25 passes over them; many are found faster by `places_among`)."""
    wanted = np.asarray(wanted, dtype=sorted_values.dtype)
    if not len(sorted_values):
        return np.full(len(wanted), -1, dtype=np.int64)
    places = np.minimum(lower_bounds(sorted_values, wanted), len(sorted_values) - 1)
    return np.where(sorted_values[places] == wanted, places, -1).astype(np.int64)


@dataclass(frozen=True)
class Labels:
    """A column of few distinct strings (shard names, days, image formats) as each row's code
    into `names`: 4 bytes a row."""

    names: np.ndarray  # STRINGS
    codes: np.ndarray  # int32, one a row

    @classmethod
    def of(cls, values: pd.Series) -> Labels:
        codes, names = pd.factorize(values.astype(str), sort=True)
        return cls(string_array(np.asarray(names, dtype=object)), codes.astype(np.int32))

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, row: int) -> str:
        return str(self.names[self.codes[row]])

    def where(self, matches: np.ndarray) -> np.ndarray:
        """Give, per row, whether its label matches: `matches` is that test of `names` (each
        distinct label tested once, not each row)."""
        return np.asarray(matches, dtype=bool)[self.codes]

    def at(self, places: np.ndarray) -> Labels:
        """Give the labels of the rows at `places`, "" where a place is -1."""
        names, missing = self.names, places < 0
        blank = np.flatnonzero(names == "")
        if missing.any() and not len(blank):
            names, blank = np.concatenate([names, string_array([""])]), np.array([len(names)])
        codes = self.codes[np.maximum(places, 0)] if len(self.codes) else np.zeros(len(places), np.int32)
        return Labels(names, np.where(missing, blank[0] if len(blank) else 0, codes).astype(np.int32))

    def subset(self, rows: np.ndarray) -> Labels:
        """Give the labels of `rows` (indices or a mask)."""
        return Labels(self.names, self.codes[rows])


@dataclass(frozen=True)
class ImageFiles:
    """An image collection's accepted files, as `id -> (path, content digest)`, held as sorted
    arrays (a dict of tuples costs ~300 bytes an image, 3 GB at 10M)."""

    folder: Path  # manifest paths are relative to it (an absolute one stays as it is)
    ids: np.ndarray  # sorted
    paths: np.ndarray
    digests: np.ndarray
    by_digest: np.ndarray  # the places of `digests` in increasing order

    @classmethod
    def of(cls, folder: Path, ids: np.ndarray, paths: np.ndarray, digests: np.ndarray) -> ImageFiles:
        order = np.argsort(ids, kind="stable")
        ids, paths, digests = ids[order], paths[order], digests[order]
        return cls(folder, ids, paths, digests, np.argsort(digests, kind="stable").astype(np.int32))

    def sharing(self, ids: np.ndarray) -> ImageFiles:
        """Give these files with `ids` as their ids' array where they are the same ids (a
        collection's own array, held once)."""
        if ids is self.ids or not np.array_equal(ids, self.ids):
            return self
        return ImageFiles(self.folder, ids, self.paths, self.digests, self.by_digest)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and self._place(item) >= 0

    def _place(self, item: str) -> int:
        return int(find_sorted(self.ids, string_array([item]))[0])

    def get(self, item: str, default: tuple[str, str] | None = None) -> tuple[str, str] | None:
        """Give an image's (path, digest), or `default` when the collection has no such image."""
        place = self._place(item)
        if place < 0:
            return default
        return str(self.folder / str(self.paths[place])), str(self.digests[place])

    def items(self) -> Iterator[tuple[str, tuple[str, str]]]:
        for item, path, digest in zip(self.ids, self.paths, self.digests, strict=True):
            yield str(item), (str(self.folder / str(path)), str(digest))

    def with_digest(self, digest: str) -> str | None:
        """Give the id of an image whose content has `digest` (the first by id), or None."""
        place = int(find_sorted(self.digests[self.by_digest], string_array([digest]))[0])
        return str(self.ids[self.by_digest[place]]) if place >= 0 else None


def current_items(files: CollectionFiles) -> pd.DataFrame:
    """Give a collection's current items (id, digest, shard), one row per id, sorted by id."""
    current = pd.read_parquet(files.assignment, columns=["id", "digest", "shard"])
    return current.drop_duplicates("id", keep="last").sort_values("id", kind="stable").reset_index(drop=True)


def captions(files: CollectionFiles) -> dict[str, str]:
    """Give a text collection's accepted captions by id."""
    from tuwen.data.ingest import accepted_captions

    return {str(k): str(v) for k, v in accepted_captions(files.manifest).items()}


def image_files(run: FinishedRun, files: CollectionFiles) -> ImageFiles:
    """Give an image collection's accepted images: id -> (path, content digest). Manifest paths
    are relative to the run folder unless the data lies elsewhere."""
    images = pd.read_parquet(files.manifest, columns=["image_id", "path", "digest", "status"])
    images = images[images["status"] == "ok"].drop_duplicates("image_id", keep="last")
    columns = [string_array(images[name].astype(str)) for name in ("image_id", "path", "digest")]
    return ImageFiles.of(run.folder, *columns)


def image_texts(files: CollectionFiles) -> dict[str, str]:
    """Give the text OCR read in each current image (none where the run read no text)."""
    if not files.ocr:
        return {}
    from tuwen.text.ocr import read_ocr_texts

    return read_ocr_texts(files.ocr, pd.read_parquet(files.assignment, columns=["id", "digest"]))


def shown_items(files: CollectionFiles) -> pd.Series:
    """Give what each item is: a text's caption, an image's file as the run's manifest names it
    (relative to the run folder unless the data lies elsewhere)."""
    if files.kind != IMAGES:
        return pd.Series(captions(files), dtype=object)
    images = pd.read_parquet(files.manifest, columns=["image_id", "path", "status"])
    images = images[images["status"] == "ok"].drop_duplicates("image_id", keep="last")
    return images.set_index("image_id")["path"]


def ground_truths(run: FinishedRun, given: Path | None = None) -> dict[str, GroundTruth]:
    """Give each task's ground truth: a `text_id,image_id` CSV given for every task, or the run's own."""
    truths = {}
    for name, task in run.declared.tasks.items():
        if given is not None:
            truths[name] = contest_ground_truth(str(given), task.query_kind)
        elif task.ground_truth is not None:
            path = run.folder / task.ground_truth.file  # a relative path is the run folder's
            if path.is_file():
                truths[name] = GroundTruth(
                    str(path), task.ground_truth.query_column, task.ground_truth.gallery_column
                )
    return truths
