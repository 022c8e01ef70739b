"""What a finished run's items are: each collection's current items, its captions, its image
files and the text read in them, and each task's ground truth, from the files its record
names (tuwen.finished.reader)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tuwen.finished.reader import CollectionFiles, FinishedRun
from tuwen.run.declaration import IMAGES, GroundTruth, contest_ground_truth


def current_items(files: CollectionFiles) -> pd.DataFrame:
    """Give a collection's current items (id, digest, shard), one row per id, sorted by id."""
    current = pd.read_parquet(files.assignment, columns=["id", "digest", "shard"])
    return current.drop_duplicates("id", keep="last").sort_values("id", kind="stable").reset_index(drop=True)


def captions(files: CollectionFiles) -> dict[str, str]:
    """Give a text collection's accepted captions by id."""
    from tuwen.data.ingest import accepted_captions

    return {str(k): str(v) for k, v in accepted_captions(files.manifest).items()}


def image_files(run: FinishedRun, files: CollectionFiles) -> dict[str, tuple[str, str]]:
    """Give an image collection's accepted images: id -> (path, content digest). Manifest paths
    are relative to the run folder unless the data lies elsewhere."""
    images = pd.read_parquet(files.manifest, columns=["image_id", "path", "digest", "status"])
    images = images[images["status"] == "ok"].drop_duplicates("image_id", keep="last")
    return {
        i: (str(run.folder / p), d)
        for i, p, d in zip(images["image_id"], images["path"], images["digest"], strict=True)
    }


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
