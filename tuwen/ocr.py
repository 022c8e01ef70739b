"""Text inside images: PP-OCR (rapidocr-onnxruntime, models shipped in the wheel) per image shard.

Each image gets one row: the recognised lines joined by spaces in reading order, their
boxes and confidences. An image without text gives an empty string (status `empty`);
an image that cannot be decoded or read gives an empty string too, with status `failed`
and a sentence naming the file, so fusion falls back to no text for it and the
accounting counts it. Nothing stops the shard.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
from PIL import Image

from tuwen.images import ImageRejected, load_image
from tuwen.parquet import write_table

LOG = logging.getLogger(__name__)
OCR_COLUMNS = ["id", "digest", "text", "boxes", "confidence", "status", "reason"]


@dataclass(frozen=True)
class ReadText:
    """What OCR read in one image."""

    text: str
    boxes: list  # one [[x, y] x 4] per line, in the original image's pixels
    confidences: list[float]
    status: str  # ok, empty or failed
    reason: str = ""


def onnx_cuda_available() -> bool:
    """Tell whether onnxruntime can run on a CUDA GPU here (onnxruntime-gpu installed, GPU seen)."""
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def ocr_engine(threads: int, device: str = "auto"):
    """Give a PP-OCR engine using `threads` CPU threads, on CUDA when asked or available."""
    from rapidocr_onnxruntime import RapidOCR

    cuda = onnx_cuda_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not onnx_cuda_available():
        raise RuntimeError(
            "ocr.device is cuda, but onnxruntime has no CUDA provider (install onnxruntime-gpu)"
        )
    return RapidOCR(
        intra_op_num_threads=threads,
        inter_op_num_threads=1,
        det_use_cuda=cuda,
        cls_use_cuda=cuda,
        rec_use_cuda=cuda,
    )


def read_image_text(engine, path: str, max_pixels: int) -> ReadText:
    """Read the text in the image at `path`; never raises for a bad file or an OCR failure."""
    try:
        image, _ = load_image(path, max_pixels)
    except ImageRejected as rejected:
        return ReadText("", [], [], "failed", rejected.message)
    return read_picture_text(engine, image, path)


def read_picture_text(engine, image: Image.Image, source: str) -> ReadText:
    """Read the text in a decoded image; never raises for an OCR failure."""
    try:
        lines, _ = engine(image)
    except Exception as error:  # noqa: BLE001 - onnxruntime and OpenCV raise many types
        return ReadText("", [], [], "failed", f"{source}: OCR failed ({type(error).__name__}: {error})")
    if not lines:
        return ReadText("", [], [], "empty")
    boxes = [[[round(float(x), 1), round(float(y), 1)] for x, y in box] for box, _, _ in lines]
    return ReadText(
        " ".join(text for _, text, _ in lines), boxes, [round(float(s), 4) for _, _, s in lines], "ok"
    )


def ocr_shard(
    shard_list: str | os.PathLike, output: str | os.PathLike, engine, max_pixels: int
) -> pd.DataFrame:
    """Read the text of every image of a shard list (id, digest, source) into an OCR shard."""
    items = pd.read_parquet(shard_list)
    rows = []
    for item in items.itertuples(index=False):
        read = read_image_text(engine, item.source, max_pixels)
        if read.status == "failed":
            LOG.warning("no OCR text for %s: %s", item.id, read.reason)
        rows.append(
            {
                "id": item.id,
                "digest": item.digest,
                "text": read.text,
                "boxes": json.dumps(read.boxes),
                "confidence": json.dumps(read.confidences),
                "status": read.status,
                "reason": read.reason,
            }
        )
    table = pd.DataFrame(rows, columns=OCR_COLUMNS)
    write_table(pa.Table.from_pandas(table, preserve_index=False), output, {"ocr": "rapidocr-onnxruntime"})
    return table


def read_ocr_texts(paths: list[str | os.PathLike], current: pd.DataFrame) -> dict[str, str]:
    """Give each current image's OCR text (by id) from OCR shards; only rows whose digest is current."""
    digest_of = dict(zip(current["id"], current["digest"], strict=True))
    texts: dict[str, str] = {}
    for path in paths:
        shard = pd.read_parquet(path, columns=["id", "digest", "text"])
        for item_id, digest, text in zip(shard["id"], shard["digest"], shard["text"], strict=True):
            if digest_of.get(item_id) == digest:
                texts[item_id] = text
    return texts
