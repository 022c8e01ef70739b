"""Text inside images: PP-OCR (rapidocr-onnxruntime, models shipped in the wheel) per image shard,
on the CPU with onnxruntime or on a CUDA GPU with the same models in torch (tuwen.text.ocr_torch).

Each image gets one row: the recognised lines joined by spaces in reading order, their
boxes and confidences. An image without text gives an empty string (status `empty`);
an image that cannot be decoded or read gives an empty string too, with status `failed`
and a sentence naming the file, so fusion falls back to no text for it and the
accounting counts it. Nothing stops the shard.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
from PIL import Image

from tuwen.files.images import ImageRejected, load_image
from tuwen.files.parquet import write_table

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


def cuda_gpu_seen() -> bool:
    """Tell whether torch sees a CUDA GPU here, without starting CUDA in this process.

    An OCR job forks its engines' processes after this check, and CUDA started before a
    fork cannot be used in the children: torch's NVML-based check counts the devices
    without starting it. No NVIDIA device file, no torch import (seconds of start-up).
    """
    driver_files = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version")
    if not any(Path(name).exists() for name in driver_files) and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return False
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class OcrOptions:
    """What OCR reads with, besides the models: the scale the detector sees and whether
    the angle classifier runs. Both change what is read (`fusion.ocr_detect_side`,
    `fusion.ocr_angle_classifier`).

    `detect_limit` "max" scales an image down until its longer side is at most
    `detect_side` (a 500 x 400 contest photo stays as it is); rapidocr's own default
    ("min", 736, classifier on: `PPOCR_DEFAULTS`) scales the shorter side *up* to 736, so
    the same photo is detected at 920 x 736, ~3x the work, for little more text read
    (bench/README.md, `make bench-ocr`).
    """

    detect_side: int
    angle_classifier: bool
    detect_limit: str = "max"  # rapidocr's "min" scales up (PPOCR_DEFAULTS); the workflow's never does

    def engine_options(self) -> dict:
        return {
            "det_limit_type": self.detect_limit,
            "det_limit_side_len": self.detect_side,
            "use_cls": self.angle_classifier,
        }

    @classmethod
    def from_settings(cls, settings: dict) -> OcrOptions:
        """Read the OCR settings from the run's `ocr` settings file (tuwen.run.settings)."""
        return cls(settings["fusion"]["ocr_detect_side"], settings["fusion"]["ocr_angle_classifier"])

    @classmethod
    def defaults(cls) -> OcrOptions:
        """Give the workflow's default OCR settings (the schema's)."""
        from tuwen.run.schema import schema_default

        return cls.from_settings({"fusion": schema_default("fusion")})

    def describe(self) -> dict:
        return asdict(self)


PPOCR_DEFAULTS = OcrOptions(detect_side=736, angle_classifier=True, detect_limit="min")


def ocr_device(requested: str) -> str:
    """Give `cuda` or `cpu` for `fusion.ocr_device` (auto: CUDA when torch sees a GPU)."""
    if requested == "auto":
        return "cuda" if cuda_gpu_seen() else "cpu"
    if requested == "cuda" and not cuda_gpu_seen():
        raise RuntimeError("fusion.ocr_device is cuda, but torch sees no CUDA GPU here")
    return requested


def ocr_processes(requested: int | str, threads: int) -> int:
    """Give the OCR processes of a job of `threads` threads (`fusion.ocr_processes`; auto: one a thread)."""
    return max(1, threads if requested == "auto" else int(requested))


def ocr_engine(threads: int, device: str, settings: OcrOptions):
    """Give a PP-OCR engine: onnxruntime with `threads` CPU threads, or on CUDA its models as
    torch modules (tuwen.text.ocr_torch), when asked or, with auto, when a GPU is seen."""
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(
        intra_op_num_threads=threads,
        inter_op_num_threads=1,
        **settings.engine_options(),
    )
    resolved = ocr_device(device)
    if resolved == "cpu":
        return engine
    from tuwen.text.ocr_torch import run_models_on_torch

    return run_models_on_torch(engine, resolved)


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
    except Exception as error:  # noqa: BLE001 - onnxruntime, torch and OpenCV raise many types
        return ReadText("", [], [], "failed", f"{source}: OCR failed ({type(error).__name__}: {error})")
    if not lines:
        return ReadText("", [], [], "empty")
    boxes = [[[round(float(x), 1), round(float(y), 1)] for x, y in box] for box, _, _ in lines]
    return ReadText(
        " ".join(text for _, text, _ in lines), boxes, [round(float(s), 4) for _, _, s in lines], "ok"
    )


def ocr_shard(
    shard_list: str | os.PathLike,
    output: str | os.PathLike,
    max_pixels: int,
    settings: OcrOptions,
    threads: int = 1,
    processes: int = 1,
    device: str = "cpu",
) -> pd.DataFrame:
    """Read the text of every image of a shard list (id, digest, source) into an OCR shard.

    `processes` engines of `threads` threads each share the images (in order of the list).
    """
    items = pd.read_parquet(shard_list)
    paths = items["source"].tolist()
    if processes > 1 and len(paths) > processes:
        # Fork, not spawn: a spawned child re-runs the parent's main module, and a Snakemake
        # job's main module is its script (module-level code that needs `snakemake`). The
        # engines are made in the children, after the fork.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        initargs = (threads, device, settings, max_pixels)
        with ProcessPoolExecutor(
            processes, mp_context=context, initializer=start_ocr_worker, initargs=initargs
        ) as pool:
            reads = list(pool.map(read_in_ocr_worker, paths, chunksize=4))
    else:
        engine = ocr_engine(threads, device, settings)
        reads = [read_image_text(engine, path, max_pixels) for path in paths]
    rows = []
    for item, read in zip(items.itertuples(index=False), reads, strict=True):
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
    engine = "onnxruntime, cpu" if device == "cpu" else f"torch (onnx2torch), {device}"
    metadata = {"ocr": "rapidocr-onnxruntime", "engine": engine, "settings": settings.describe()}
    write_table(pa.Table.from_pandas(table, preserve_index=False), output, metadata)
    return table


_WORKER: dict = {}


def start_ocr_worker(threads: int, device: str, settings: OcrOptions, max_pixels: int) -> None:
    _WORKER["engine"] = ocr_engine(threads, device, settings)
    _WORKER["max_pixels"] = max_pixels


def read_in_ocr_worker(path: str) -> ReadText:
    return read_image_text(_WORKER["engine"], path, _WORKER["max_pixels"])


def read_ocr_texts(paths: Sequence[str | os.PathLike], current: pd.DataFrame) -> dict[str, str]:
    """Give each current image's OCR text (by id) from OCR shards; only rows whose digest is current."""
    digest_of = dict(zip(current["id"], current["digest"], strict=True))
    texts: dict[str, str] = {}
    for path in paths:
        shard = pd.read_parquet(path, columns=["id", "digest", "text"])
        for item_id, digest, text in zip(shard["id"], shard["digest"], shard["text"], strict=True):
            if digest_of.get(item_id) == digest:
                texts[item_id] = text
    return texts


def run_ocr_engine(run_folder: str | os.PathLike):
    """Give an OCR engine (one thread, the CPU) with a finished run's own OCR settings, so that
    a query's text is read as the run read its images'."""
    from tuwen.run import layout

    path = Path(run_folder) / layout.settings("ocr")
    settings = OcrOptions.from_settings(json.loads(path.read_text(encoding="utf-8")))
    return ocr_engine(threads=1, device="cpu", settings=settings)
