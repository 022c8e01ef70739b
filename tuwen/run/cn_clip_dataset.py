"""The cn_clip preset: a dataset folder as CN-CLIP's own scripts lay it out, declared as a run.

CN-CLIP's datasets (MUGE, Flickr30k-CN, COCO-CN, and a user's own converted with its
scripts) hold per split `{split}_imgs.tsv` (`image_id<TAB>base64`, no header; or only its
LMDB, `lmdb/{split}/imgs`) and `{split}_texts.jsonl` (`{"text_id", "text", "image_ids"}`).
`preset: cn_clip` with data_root the dataset folder gives:

- training pairs from `train` (one pair per image id of a caption's `image_ids`), validated
  on `valid` where the folder has it (the best epoch, and fusion's choice, are made there);
- text → image and image → text tasks on `test` (or `valid` where there is no test), with
  ground truth from the same texts file, scored as cn_clip's evaluation scores them
  (results/eval/cn_clip/).
"""

from __future__ import annotations

import os
from typing import Any

CN_CLIP = "cn_clip"
SPLITS = ("train", "valid", "test")


def split_files(split: str, root: str = "") -> tuple[str, str]:
    """Give a split's images (its TSV, or where there is none in `root` its LMDB) and texts,
    relative to the dataset folder."""
    images = f"{split}_imgs.tsv"
    lmdb = os.path.join("lmdb", split, "imgs")
    if root and not os.path.isfile(os.path.join(root, images)) and os.path.isdir(os.path.join(root, lmdb)):
        images = lmdb
    return images, f"{split}_texts.jsonl"


def has_split(root: str, split: str) -> bool:
    return all(os.path.exists(os.path.join(root, name)) for name in split_files(split, root))


def judged_split(root: str) -> str:
    """Give the split the tasks rank: test where the folder has it, else valid."""
    return "test" if has_split(root, "test") or not has_split(root, "valid") else "valid"


def preset(root: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Give the collections, tasks and training the dataset folder `root` declares."""
    split = judged_split(root)
    images, texts = split_files(split, root)
    collections = {
        f"{split}_images": {"images": images},
        f"{split}_texts": {"texts": texts, "id_column": "text_id", "caption_column": "text"},
    }
    tasks = {
        "t2i": {
            "queries": f"{split}_texts",
            "gallery": f"{split}_images",
            "k": 10,
            "ground_truth": {"file": texts, "query_column": "text_id", "gallery_column": "image_ids"},
        },
        "i2t": {
            "queries": f"{split}_images",
            "gallery": f"{split}_texts",
            "k": 10,
            "ground_truth": {"file": texts, "query_column": "image_ids", "gallery_column": "text_id"},
        },
    }
    training: dict[str, Any] = {}
    if has_split(root, "train"):
        train_images, train_texts = split_files("train", root)
        training = {
            "pairs": train_texts,
            "images": train_images,
            "image_column": "image_ids",
            "caption_column": "text",
        }
        if has_split(root, "valid"):
            training["validation_images"], training["validation_pairs"] = split_files("valid", root)
    return collections, tasks, training


def missing_files(root: str) -> list[str]:
    """Give what a folder lacks to be a CN-CLIP dataset (nothing: it is one)."""
    if any(has_split(root, split) for split in ("valid", "test")):
        return []
    return [name for split in ("valid", "test") for name in split_files(split)]
