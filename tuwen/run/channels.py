"""The names of a run's channels: every score of a query against a gallery item that the
tables, fusion, the server and the command line speak of.

- `clip:<model>` is a model's ranking stage (its fine-tuned weights when it trains),
  `clip:<model>:<stage>` another stage of it (`clip:<model>:base` beside the fine-tuned one);
- `text:<encoder>` a sentence encoder's cosine of a caption and the text read in an image;
- `ocr` the lexical match (BM25 of characters) of a caption and the text read in an image.
"""

from __future__ import annotations

CLIP, TEXT, OCR = "clip", "text", "ocr"


def channel_name(source: str, name: str = "", stage: str | None = None) -> str:
    """Give a channel's name: `clip:<name>` (stage None: the model's ranking stage) or
    `clip:<name>:<stage>`, `text:<name>` for a sentence encoder, `ocr` for OCR."""
    if source == OCR:
        return OCR
    if source == TEXT:
        return f"{TEXT}:{name}"
    if source == CLIP:
        return f"{CLIP}:{name}" if stage is None else f"{CLIP}:{name}:{stage}"
    raise ValueError(f"no channel source {source!r} (clip, text or ocr)")


def channel_source(channel: str) -> str:
    """Give what a channel's scores come from: `clip`, `text` or `ocr` (`channel_name`'s first part)."""
    return channel.split(":", 1)[0]


def score_column(channel: str) -> str:
    """Give a channel's raw-score column in a fused topk.parquet, e.g. score_clip_tuwen-tiny-rn."""
    return "score_" + channel.replace(":", "_")
