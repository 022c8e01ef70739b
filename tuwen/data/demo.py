"""The embedded demo: a small, deterministic dataset laid out like the contest folders.

Each image shows one coloured shape at one position on a noisy background; its
caption says which, in Chinese (e.g. "左上角有一个红色的圆形"). 8 colours x 5 shapes
x 5 positions = 200 distinct scenes, enough for a retrieval task whose chance R@5 is
2.5%, yet learnable by a tiny CN-CLIP on a CPU in minutes. Like the real data it has
flaws: training rows naming missing images, and PNG/GIF files under a `.jpg` name.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tuwen.run.contest import DEMO_LABELS

COLOURS = {
    "红色": (215, 38, 38),
    "绿色": (34, 160, 60),
    "蓝色": (35, 80, 215),
    "黄色": (235, 195, 20),
    "紫色": (140, 55, 185),
    "橙色": (245, 125, 15),
    "黑色": (25, 25, 25),
    "青色": (20, 185, 195),
}
SHAPES = ("圆形", "正方形", "三角形", "星形", "十字")
POSITIONS = {
    "左上角": (0.28, 0.28),
    "右上角": (0.72, 0.28),
    "左下角": (0.28, 0.72),
    "右下角": (0.72, 0.72),
    "中间": (0.5, 0.5),
}
TEMPLATES = (
    "{pos}有一个{colour}的{shape}",
    "一个{colour}{shape}位于画面{pos}",
    "画面{pos}是{colour}的{shape}",
    "{colour}的{shape}出现在{pos}",
)
IMAGE_SIZE = 96


@dataclass(frozen=True)
class Scene:
    """What one demo image shows."""

    colour: str
    shape: str
    position: str


ALL_SCENES = [Scene(c, s, p) for c, s, p in itertools.product(COLOURS, SHAPES, POSITIONS)]


def caption_of(scene: Scene, rng: random.Random) -> str:
    """Give a Chinese caption of `scene`, in one of several phrasings."""
    return rng.choice(TEMPLATES).format(pos=scene.position, colour=scene.colour, shape=scene.shape)


def draw_scene(scene: Scene, rng: random.Random) -> Image.Image:
    """Give an RGB image of `scene` with jittered size and place and a noisy background."""
    noise = np.random.default_rng(rng.getrandbits(32))
    base = noise.integers(200, 245, size=3)
    pixels = np.clip(base + noise.normal(0, 9, size=(IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    fx, fy = POSITIONS[scene.position]
    cx = fx * IMAGE_SIZE + rng.uniform(-5, 5)
    cy = fy * IMAGE_SIZE + rng.uniform(-5, 5)
    r = rng.uniform(11, 16)
    colour = COLOURS[scene.colour]
    if scene.shape == "圆形":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif scene.shape == "正方形":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif scene.shape == "三角形":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif scene.shape == "星形":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = np.pi / 2 + i * np.pi / 5
            points.append((cx + radius * np.cos(angle), cy - radius * np.sin(angle)))
        draw.polygon(points, fill=colour)
    else:  # 十字
        w = r * 0.38
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
    return image


def _save(image: Image.Image, path: Path, image_format: str = "JPEG") -> None:
    buffer = io.BytesIO()
    if image_format == "GIF":
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, format="GIF")
    elif image_format == "PNG":
        image.convert("RGBA").save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=92)
    path.write_bytes(buffer.getvalue())


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def image_id(batch: int, number: int) -> str:
    """Give a contest-style image id such as Image14001001-0000.jpg."""
    return f"Image{14001000 + batch}-{number:04d}.jpg"


def text_id(number: int) -> str:
    """Give a contest-style text id such as Word-1000000001."""
    return f"Word-{1000000000 + number}"


def generate_demo(root: str | os.PathLike, train_pairs: int, queries: int, seed: int) -> dict[str, int]:
    """Write the demo dataset under `root` (附件1, 附件2, 附件3, ground_truth.csv); give its counts.

    Each direction has `queries` queries (at most 100) over a gallery of twice as many
    distinct scenes. The same arguments give the same files, byte for byte.
    """
    if not 1 <= queries <= len(ALL_SCENES) // 2:
        raise ValueError(f"queries must be between 1 and {len(ALL_SCENES) // 2}, got {queries}")
    rng = random.Random(seed)
    root = Path(root)
    folders = {name: root / name / "ImageData" for name in ("附件1", "附件2", "附件3")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)

    # 附件1: training pairs; two rows name images that are not there, two files are not JPEG.
    train_rows = []
    for n in range(train_pairs):
        scene = rng.choice(ALL_SCENES)
        name = image_id(1, n)
        image_format = {7: "PNG", 11: "GIF"}.get(n, "JPEG")
        _save(draw_scene(scene, rng), folders["附件1"] / name, image_format)
        train_rows.append([name, caption_of(scene, rng)])
    for n in (train_pairs, train_pairs + 1):
        train_rows.append([image_id(1, n), caption_of(rng.choice(ALL_SCENES), rng)])
    _write_csv(root / "附件1" / "ImageWordData.csv", ["image_id", "caption"], train_rows)

    # 附件2: query captions; a gallery of distinct scenes, one image each (one a GIF).
    gallery_scenes = ALL_SCENES[:]
    rng.shuffle(gallery_scenes)
    gallery_scenes = gallery_scenes[: 2 * queries]
    truth = []
    gallery_ids = []
    for n, scene in enumerate(gallery_scenes):
        name = image_id(2, n)
        _save(draw_scene(scene, rng), folders["附件2"] / name, "GIF" if n == 3 else "JPEG")
        gallery_ids.append(name)
    query_rows = []
    for n in range(queries):
        tid = text_id(n)
        query_rows.append([tid, caption_of(gallery_scenes[n * 2], rng)])
        truth.append([tid, gallery_ids[n * 2]])
    _write_csv(root / "附件2" / "word_test.csv", ["text_id", "caption"], query_rows)

    # 附件3: query images; a gallery of captions, one per distinct scene.
    caption_scenes = ALL_SCENES[:]
    rng.shuffle(caption_scenes)
    caption_scenes = caption_scenes[: 2 * queries]
    text_rows = [[text_id(1000 + n), caption_of(scene, rng)] for n, scene in enumerate(caption_scenes)]
    query_images = []
    for n in range(queries):
        name = image_id(3, n)
        scene_index = n * 2 + 1
        _save(draw_scene(caption_scenes[scene_index], rng), folders["附件3"] / name)
        query_images.append([name])
        truth.append([text_rows[scene_index][0], name])
    _write_csv(root / "附件3" / "word_data.csv", ["text_id", "caption"], text_rows)
    _write_csv(root / "附件3" / "image_test.csv", ["image_id"], query_images)
    _write_csv(root / "ground_truth.csv", ["text_id", "image_id"], truth)
    # Labels for zero-shot tags (tags.labels: labels.txt): what the shapes are, and their colours.
    (root / DEMO_LABELS).write_text("\n".join([*SHAPES, *COLOURS]) + "\n", encoding="utf-8")
    return {
        "train_pairs": len(train_rows),
        "t2i_queries": 100,
        "t2i_gallery": len(gallery_ids),
        "i2t_queries": 100,
        "i2t_gallery": len(text_rows),
    }
