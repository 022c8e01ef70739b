"""A contest-shaped folder at any size, made from the real sample or from generated scenes.

Every image is a distinct web-photo-size JPEG (a different crop, flip and tone of a
source picture, at most 500 px a side) and every caption a distinct string, so no two
items share an embedding and the exact top-k has no ties to hide behind. Nothing is
downloaded. Layout as in the contest:

    附件1/ImageWordData.csv + ImageData/   a small training set (training is off in the bench)
    附件2/word_test.csv + ImageData/       text -> image: `queries` captions, `gallery` images
    附件3/image_test.csv + ImageData/ + word_data.csv
                                           image -> text: `queries` images, `gallery` captions
"""

from __future__ import annotations

import csv
import os
import random
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tuwen.data.demo import ALL_SCENES, caption_of, draw_scene
from tuwen.files.images import load_image

MAX_SIDE = 500
TRAIN_PAIRS = 200


@dataclass(frozen=True)
class Sources:
    """Source pictures (paths; empty = generated scenes) and source captions."""

    images: tuple[str, ...]
    captions: tuple[str, ...]


def sources_from(sample: Path | None) -> Sources:
    """Give the sample's images and captions, or generated scenes' captions when `sample` is None."""
    if sample is None or not (sample / "附件1" / "ImageWordData.csv").exists():
        rng = random.Random(0)
        return Sources((), tuple(caption_of(scene, rng) for scene in ALL_SCENES * 4))
    images = sorted(
        str(p) for folder in ("附件1", "附件2", "附件3") for p in (sample / folder / "ImageData").iterdir()
    )
    captions = []
    for name in ("附件1/ImageWordData.csv", "附件2/word_test.csv", "附件3/word_data.csv"):
        with open(sample / name, encoding="utf-8-sig", newline="") as handle:
            captions += [row["caption"] for row in csv.DictReader(handle) if row["caption"].strip()]
    return Sources(tuple(images), tuple(dict.fromkeys(captions)))


@cache
def _source_picture(path: str) -> Image.Image:
    image, _ = load_image(path, None)
    image.thumbnail((MAX_SIDE * 2, MAX_SIDE * 2))
    return image


def distinct_image(sources: Sources, number: int) -> Image.Image:
    """Give picture `number`: a source picture with its own crop, mirror and tone."""
    rng = random.Random(number)
    if sources.images:
        image = _source_picture(sources.images[number % len(sources.images)])
    else:
        image = draw_scene(ALL_SCENES[number % len(ALL_SCENES)], rng).resize((MAX_SIDE, 400))
    width, height = image.size
    crop_w, crop_h = int(width * rng.uniform(0.7, 1.0)), int(height * rng.uniform(0.7, 1.0))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    image = image.crop((left, top, left + crop_w, top + crop_h))
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    tone = np.asarray(image, dtype=np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
    return Image.fromarray(np.clip(tone, 0, 255).astype(np.uint8))


def distinct_caption(sources: Sources, number: int) -> str:
    """Give caption `number`: a source caption plus a clause of another, and its number."""
    rng = random.Random(-1 - number)
    first = sources.captions[number % len(sources.captions)]
    other = sources.captions[rng.randrange(len(sources.captions))]
    return f"{first}，{other[: rng.randint(2, 8)]}（第{number}条）"


def image_name(number: int) -> str:
    return f"Image{14000000 + number // 10000:08d}-{number % 10000:04d}.jpg"


def text_name(number: int) -> str:
    return f"Word-{1000000000 + number}"


def _write_image(args: tuple[Sources, int, str]) -> None:
    sources, number, folder = args
    distinct_image(sources, number).save(Path(folder) / image_name(number), format="JPEG", quality=90)


def write_images(sources: Sources, numbers: range, folder: Path, workers: int) -> None:
    """Write pictures `numbers` into `folder` as JPEG files, in `workers` processes."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(sources, n, str(folder)) for n in numbers]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_image, jobs, chunksize=64))


def _write_rows(path: Path, header: list[str], rows: list[list[str]], append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if not append:
            writer.writerow(header)
        writer.writerows(rows)


# Number ranges: each collection draws its own pictures and captions, so none repeats.
T2I_GALLERY, I2T_QUERIES, TRAIN, ADDED = 0, 10_000_000, 20_000_000, 30_000_000


def make_contest_folder(root: Path, gallery: int, queries: int, sources: Sources, workers: int) -> None:
    """Write a contest-shaped folder with `gallery` items and `queries` queries per direction."""
    write_images(sources, range(T2I_GALLERY, T2I_GALLERY + gallery), root / "附件2/ImageData", workers)
    write_images(sources, range(I2T_QUERIES, I2T_QUERIES + queries), root / "附件3/ImageData", workers)
    write_images(sources, range(TRAIN, TRAIN + TRAIN_PAIRS), root / "附件1/ImageData", workers)

    def captions(numbers: range) -> list[list[str]]:
        return [[text_name(n), distinct_caption(sources, n)] for n in numbers]

    _write_rows(root / "附件2/word_test.csv", ["text_id", "caption"], captions(range(queries)))
    _write_rows(
        root / "附件3/word_data.csv",
        ["text_id", "caption"],
        captions(range(I2T_QUERIES, I2T_QUERIES + gallery)),
    )
    _write_rows(
        root / "附件3/image_test.csv",
        ["image_id"],
        [[image_name(n)] for n in range(I2T_QUERIES, I2T_QUERIES + queries)],
    )
    _write_rows(
        root / "附件1/ImageWordData.csv",
        ["image_id", "caption"],
        [[image_name(n), distinct_caption(sources, n)] for n in range(TRAIN, TRAIN + TRAIN_PAIRS)],
    )


def add_gallery_images(root: Path, count: int, sources: Sources, workers: int) -> None:
    """Add `count` new pictures to the text -> image gallery (附件2/ImageData)."""
    write_images(sources, range(ADDED, ADDED + count), root / "附件2/ImageData", workers)


def add_gallery_captions(root: Path, count: int, sources: Sources) -> None:
    """Append `count` new captions to the image -> text gallery (附件3/word_data.csv)."""
    rows = [[text_name(n), distinct_caption(sources, n)] for n in range(ADDED, ADDED + count)]
    path = root / "附件3/word_data.csv"
    # A new file, not an append: the folder may be a hard-linked copy of a pristine one.
    grown = path.with_name(".grown-" + path.name)
    shutil.copyfile(path, grown)
    _write_rows(grown, [], rows, append=True)
    os.replace(grown, path)
