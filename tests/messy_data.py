"""A contest-layout folder holding every kind of bad input users send, and what each should get."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import numpy as np
from PIL import Image

from tuwen.data.demo import ALL_SCENES, caption_of, draw_scene

PIXEL_LIMIT = 20_000_000  # the run's ingest.max_image_pixels: 6000x4000 is over, 5000x3500 under

# Gallery file name -> (status, reason code) that ingest must give it when it decodes every
# image (ingest.verify_decode: true).
GALLERY_EXPECTED = {
    "Image-ok-0.jpg": ("ok", ""),
    "Image-ok-1.jpg": ("ok", ""),
    "Image-zero.jpg": ("rejected", "empty_file"),
    "Image-truncated.jpg": ("rejected", "undecodable"),
    "Image-text.jpg": ("rejected", "not_an_image"),
    "Image-gif.jpg": ("ok", ""),
    "Image-png.jpg": ("ok", ""),
    "Image-webp.jpg": ("ok", ""),
    "Image-bmp.jpg": ("ok", ""),
    "Image-animated.jpg": ("ok", ""),
    "Image-palette.png": ("ok", ""),
    "Image-rgba.png": ("ok", ""),
    "Image-la.png": ("ok", ""),
    "Image-cmyk.jpg": ("ok", ""),
    "Image-16bit.png": ("ok", ""),
    "Image-grey.jpg": ("ok", ""),
    "Image-exif.jpg": ("ok", ""),
    "Image-bomb.png": ("rejected", "too_many_pixels"),
    "Image-large.jpg": ("ok", ""),
    "图片 带空格.jpg": ("ok", ""),
    "Image-link.jpg": ("ok", ""),
    "Image-broken-link.jpg": ("rejected", "missing_file"),
    ".DS_Store": ("ignored", "system_file"),
    "Thumbs.db": ("ignored", "system_file"),
    "._Image-ok-0.jpg": ("ignored", "system_file"),
}

# By default ingest reads headers only: these pass ingest and are rejected by the one decode
# that encoding does, with this reason code (results/summary/not_encoded.csv).
DECODE_FAILURES = {"Image-truncated.jpg": "undecodable"}
QUERY_DECODE_FAILURES = {"Image-query-truncated.jpg": "undecodable"}

LONG_CAPTION = "这是一段很长的描述，" * 8  # ~80 tokens: kept, counted as truncated


def _scene(rng: random.Random) -> Image.Image:
    return draw_scene(rng.choice(ALL_SCENES), rng)


def _bytes(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def write_gallery(folder: Path, rng: random.Random) -> None:
    """Write one file per case of GALLERY_EXPECTED into `folder`."""
    folder.mkdir(parents=True)
    scene = _scene(rng)

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)

    put("Image-ok-0.jpg", _bytes(_scene(rng), "JPEG"))
    put("Image-ok-1.jpg", _bytes(_scene(rng), "JPEG"))
    put("Image-zero.jpg", b"")
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    whole = _bytes(noise, "JPEG", quality=95)
    put("Image-truncated.jpg", whole[: len(whole) // 2])
    put("Image-text.jpg", "这不是图片\n".encode())
    put("Image-gif.jpg", _bytes(scene.convert("P"), "GIF"))
    put("Image-png.jpg", _bytes(scene, "PNG"))
    put("Image-webp.jpg", _bytes(scene, "WEBP"))
    put("Image-bmp.jpg", _bytes(scene, "BMP"))
    frames = [_scene(rng).convert("P") for _ in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    put("Image-animated.jpg", buffer.getvalue())
    put("Image-palette.png", _bytes(scene.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"))
    put("Image-rgba.png", _bytes(scene.convert("RGBA"), "PNG"))
    put("Image-la.png", _bytes(scene.convert("LA"), "PNG"))
    put("Image-cmyk.jpg", _bytes(scene.convert("CMYK"), "JPEG"))
    put("Image-16bit.png", _bytes(Image.fromarray(np.asarray(scene.convert("L"), np.uint16) * 257), "PNG"))
    put("Image-grey.jpg", _bytes(scene.convert("L"), "JPEG"))
    exif = Image.Exif()
    exif[0x0112] = 6
    put("Image-exif.jpg", _bytes(scene, "JPEG", exif=exif.tobytes()))
    put("Image-bomb.png", _bytes(Image.new("L", (6000, 4000), 128), "PNG"))
    put("Image-large.jpg", _bytes(Image.new("RGB", (5000, 3500), (30, 120, 200)), "JPEG", quality=70))
    put("图片 带空格.jpg", _bytes(_scene(rng), "JPEG"))
    os.symlink(folder / "Image-ok-1.jpg", folder / "Image-link.jpg")
    os.symlink(folder / "no-such-file.jpg", folder / "Image-broken-link.jpg")
    put(".DS_Store", b"\0\0\0\1Bud1")
    put("Thumbs.db", b"\xd0\xcf\x11\xe0")
    put("._Image-ok-0.jpg", b"\0\5\26\7")


def write_messy_contest(root: Path, seed: int = 0) -> None:
    """Write a contest-layout folder whose every file and row is a case of issue 4."""
    rng = random.Random(seed)
    write_gallery(root / "附件2" / "ImageData", rng)

    # 附件1: GB18030 with CRLF line ends; a row naming a missing image.
    train_folder = root / "附件1" / "ImageData"
    train_folder.mkdir(parents=True)
    rows = ["image_id,caption"]
    for n in range(12):
        scene = rng.choice(ALL_SCENES)
        (train_folder / f"Image-train-{n}.jpg").write_bytes(_bytes(draw_scene(scene, rng), "JPEG"))
        rows.append(f"Image-train-{n}.jpg,{caption_of(scene, rng)}")
    rows.append("Image-train-missing.jpg,不存在的图片")
    # Training cannot drop a pair mid-run: its folder is decoded at ingest even by default.
    whole = (train_folder / "Image-train-0.jpg").read_bytes()
    (train_folder / "Image-train-truncated.jpg").write_bytes(whole[: len(whole) // 2])
    rows.append("Image-train-truncated.jpg,截断的图片")
    (root / "附件1" / "ImageWordData.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode("gb18030"))

    # 附件2 queries: UTF-8 with BOM, quoting, empty and duplicate rows, an extra column.
    queries = (
        "text_id,caption,source\n"
        'Word-1,"红色的圆形,在左上角",a\n'
        'Word-2,"他说""你好""\n然后离开",b\n'
        "Word-3,,c\n"
        "Word-4,   ,d\n"
        'Word-1,"红色的圆形,在左上角",e\n'
        "Word-5,蓝色的星形,f\n"
        "Word-5,绿色的十字,g\n"
        "  Word-6  ,黄色的三角形,h\n"
        f"Word-7,{LONG_CAPTION},i\n"
    )
    (root / "附件2" / "word_test.csv").write_bytes(b"\xef\xbb\xbf" + queries.encode("utf-8"))

    # 附件3: query images (one listed id is not in the folder), gallery captions in UTF-8.
    query_folder = root / "附件3" / "ImageData"
    query_folder.mkdir(parents=True)
    for n in range(6):
        (query_folder / f"Image-query-{n}.jpg").write_bytes(_bytes(_scene(rng), "JPEG"))
    whole = (query_folder / "Image-query-0.jpg").read_bytes()
    (query_folder / "Image-query-truncated.jpg").write_bytes(whole[: len(whole) // 2])
    listed = [f"Image-query-{n}.jpg" for n in range(6)] + ["Image-query-absent.jpg", " Image-query-0.jpg "]
    listed.append("Image-query-truncated.jpg")
    (root / "附件3" / "image_test.csv").write_text("image_id\n" + "\n".join(listed) + "\n", encoding="utf-8")
    texts = ["text_id,caption"] + [
        f"Word-{100 + n},{caption_of(rng.choice(ALL_SCENES), rng)}" for n in range(14)
    ]
    (root / "附件3" / "word_data.csv").write_text("\n".join(texts) + "\n", encoding="utf-8")


# Query rows of word_test.csv (row number -> reason code; "" = answered).
T2I_QUERY_EXPECTED = {
    1: "",
    2: "",
    3: "empty_caption",
    4: "empty_caption",
    5: "duplicate_id",
    6: "",
    7: "duplicate_id",
    8: "",
    9: "",
}
I2T_QUERY_EXPECTED = {1: "", 2: "", 3: "", 4: "", 5: "", 6: "", 7: "image_missing", 8: "duplicate_id", 9: ""}
