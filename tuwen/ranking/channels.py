"""Reading a task's channels from their files: the reader in front of tuwen.ranking.fusion.

A fusion job gets a plan from the workflow (tuwen.run.plans `fusion_task_plan`): for one
task, the file that orders its queries, the shard assignments of both sides, for each
embedded channel (clip:..., text:...) its card and feature shards, and for the OCR channel
the text read in the images and the captions. Nothing here guesses what a file holds: the
plan says it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from tuwen.ranking.fusion import TaskChannels, build_channels


def embeddings_by_id(shard_paths: list[str], assignment_path: str) -> tuple[dict[str, np.ndarray], float]:
    """Give a collection's current embeddings by id, from its feature shards, and the model's logit scale."""
    from tuwen.files.parquet import read_features
    from tuwen.ranking.exact import select_features

    shards = [read_features(path) for path in shard_paths]
    current = pd.read_parquet(assignment_path, columns=["id", "digest"])
    ids, embeddings, _ = select_features(current["id"].tolist(), current, shards)
    logit_scale = float(shards[0].metadata["logit_scale"]) if shards else 100.0
    return dict(zip(ids, embeddings, strict=True)), logit_scale


def ordered_query_ids(path: str, id_column: str | None) -> list[str]:
    """Give a task's query ids in order: a manifest's accepted rows (`id_column` given), or
    the ids of gathered query features."""
    if id_column is not None:
        manifest = pd.read_parquet(path, columns=[id_column, "status"])
        return manifest.loc[manifest["status"] == "ok", id_column].drop_duplicates().tolist()
    from tuwen.files.parquet import read_features

    return read_features(path).ids


def channel_tags(plan: dict) -> dict[str, str]:
    """Give each embedded channel's tag (its model's or sentence encoder's), from its card."""
    tags = {}
    for channel, files in plan["channels"].items():
        with open(files["card"], encoding="utf-8") as handle:
            tags[channel] = json.load(handle)["tag"]
    return tags


def read_task(plan: dict) -> TaskChannels:
    """Give the channels of one task from the files its plan names; the first channel is the
    ranking model's, whose cosine is the tables' `cosine`."""
    from tuwen.data.ingest import accepted_captions
    from tuwen.text.ocr import read_ocr_texts

    embedded, logit_scale = {}, None
    for channel, files in plan["channels"].items():
        by_query, scale = embeddings_by_id(files["queries"], plan["query_assignment"])
        by_gallery, _ = embeddings_by_id(files["gallery"], plan["gallery_assignment"])
        embedded[channel] = (by_query, by_gallery)
        logit_scale = logit_scale if logit_scale is not None else scale
    texts = None
    if plan["ocr"]:
        ocr = plan["ocr"]
        captions = accepted_captions(ocr["captions"])
        image_assignment = plan["query_assignment" if ocr["images_are_queries"] else "gallery_assignment"]
        read = read_ocr_texts(ocr["read"], pd.read_parquet(image_assignment, columns=["id", "digest"]))
        texts = (read, captions) if ocr["images_are_queries"] else (captions, read)
    query_ids = ordered_query_ids(plan["query_order"], plan["query_id_column"])
    return build_channels(query_ids, embedded, texts, logit_scale or 100.0)
