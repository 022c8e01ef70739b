"""One small captioned image set written in the field's formats, for the tests that read them.

The same images (the demo's scenes, as JPEG bytes) and captions, laid out as a folder with
a captions CSV, a CN-CLIP dataset folder, webdataset tar shards as img2dataset writes them,
a Hugging Face datasets parquet and a COCO captions file over a folder, so that a test can
check that every format gives the same items, and so the same rankings.
"""

from __future__ import annotations

import base64
import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from tuwen.data.demo import ALL_SCENES, caption_of, draw_scene


@dataclass(frozen=True)
class Item:
    number: int  # the item's id in the formats whose ids are integers
    jpeg: bytes
    caption: str

    @property
    def file_name(self) -> str:
        return f"{self.number:06d}.jpg"


def items(count: int, seed: int = 0) -> list[Item]:
    rng = random.Random(seed)
    made = []
    for n, scene in enumerate(rng.sample(ALL_SCENES, count)):
        buffer = io.BytesIO()
        draw_scene(scene, rng).save(buffer, format="JPEG", quality=90)
        made.append(Item(1000 + n, buffer.getvalue(), caption_of(scene, rng)))
    return made


def write_folder(root: Path, made: list[Item]) -> Path:
    """images/<file> and captions.csv (text_id, caption, image_id): the reference layout."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for item in made:
        (root / "images" / item.file_name).write_bytes(item.jpeg)
    rows = [
        {"text_id": str(item.number), "caption": item.caption, "image_id": item.file_name} for item in made
    ]
    pd.DataFrame(rows).to_csv(root / "captions.csv", index=False)
    return root


def write_cn_clip(root: Path, split: str, made: list[Item]) -> Path:
    """CN-CLIP's `{split}_imgs.tsv` and `{split}_texts.jsonl` (text ids = image ids + 1,000,000)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{split}_imgs.tsv", "w", encoding="utf-8") as tsv:
        for item in made:
            tsv.write(f"{item.number}\t{base64.urlsafe_b64encode(item.jpeg).decode()}\n")
    with open(root / f"{split}_texts.jsonl", "w", encoding="utf-8") as jsonl:
        for item in made:
            line = {"text_id": 1_000_000 + item.number, "text": item.caption, "image_ids": [item.number]}
            jsonl.write(json.dumps(line, ensure_ascii=False) + "\n")
    return root


def write_webdataset(root: Path, made: list[Item], per_shard: int, first_shard: int = 0) -> Path:
    """img2dataset's output: `{shard:05d}.tar` of `{key}.jpg/.txt/.json`, keys `{shard}{n:04d}`."""
    root.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(made), per_shard), start=first_shard):
        with tarfile.open(root / f"{shard:05d}.tar", "w") as tar:
            for n, item in enumerate(made[start : start + per_shard]):
                key = f"{shard:05d}{n:04d}"
                meta = {"key": key, "caption": item.caption, "url": f"https://example.org/{item.file_name}"}
                for ending, data in (
                    ("jpg", item.jpeg),
                    ("txt", item.caption.encode()),
                    ("json", json.dumps(meta, ensure_ascii=False).encode()),
                ):
                    info = tarfile.TarInfo(f"{key}.{ending}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def webdataset_keys(made: list[Item], per_shard: int) -> dict[int, str]:
    return {item.number: f"{i // per_shard:05d}{i % per_shard:04d}" for i, item in enumerate(made)}


def write_hf_parquet(root: Path, made: list[Item], files: int = 2) -> Path:
    """A Hugging Face datasets split: `data/train-0000k-of-0000n.parquet`, an `image` column
    of `{bytes, path}` structs and a `caption` column, no id column."""
    folder = root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    size = -(-len(made) // files)
    for k in range(files):
        part = made[k * size : (k + 1) * size]
        table = pa.table(
            {
                "image": pa.array([{"bytes": i.jpeg, "path": i.file_name} for i in part], type=image_type),
                "caption": [i.caption for i in part],
            }
        )
        pq.write_table(table, folder / f"train-{k:05d}-of-{files:05d}.parquet", row_group_size=7)
    return root


def hf_row_ids(made: list[Item], files: int = 2) -> dict[int, str]:
    size = -(-len(made) // files)
    return {item.number: f"train-{i // size:05d}-of-{files:05d}/{i % size}" for i, item in enumerate(made)}


def write_coco(root: Path, made: list[Item]) -> Path:
    """COCO captions: images/<file> and captions.json (images, annotations), annotation ids
    = image ids + 5,000."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for item in made:
        (root / "images" / item.file_name).write_bytes(item.jpeg)
    data = {
        "images": [{"id": item.number, "file_name": item.file_name} for item in made],
        "annotations": [
            {"id": 5000 + item.number, "image_id": item.number, "caption": item.caption} for item in made
        ],
    }
    (root / "captions.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return root


def photo(seed: int) -> Image.Image:
    """A photo-like picture: a smooth random field of colour with a few blobs on it (as unlike
    the next one as two photos are, where the demo's scenes share one layout)."""
    rng = np.random.default_rng(seed)
    field = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    picture = Image.fromarray(field).resize((320, 240), Image.Resampling.BICUBIC)
    pen = ImageDraw.Draw(picture)
    for _ in range(4):
        x, y = int(rng.integers(0, 300)), int(rng.integers(0, 220))
        box = [x, y, x + int(rng.integers(20, 90)), y + int(rng.integers(20, 90))]
        pen.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return picture


def plant_copies(folder: Path, originals: dict[str, Image.Image]) -> dict[str, str]:
    """Save near and exact copies of the first five originals under new names; give each
    copy's name and its original's."""
    names = list(originals)
    pictures = [originals[name] for name in names]
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise: stored turned back, upright when read
    width, height = pictures[2].size
    copies = {
        "copies/smaller.jpg": (pictures[0].resize((160, 120)), {}),
        "copies/recompressed.jpg": (pictures[1], {"quality": 30}),
        "copies/cropped.jpg": (pictures[2].crop((16, 12, width - 16, height - 12)), {}),
        "copies/rotated.jpg": (pictures[3].rotate(90, expand=True), {"exif": exif.tobytes()}),
    }
    (folder / "copies").mkdir(parents=True, exist_ok=True)
    planted = {}
    for (name, (picture, options)), original in zip(copies.items(), names, strict=False):
        picture.save(folder / name, **{"quality": 92, **options})
        planted[name] = original
    (folder / "copies/same-bytes.jpg").write_bytes((folder / names[4]).read_bytes())
    planted["copies/same-bytes.jpg"] = names[4]
    return planted
