"""The validation task of fusion: a contest-like retrieval task made from the validation pairs.

The validation pairs are those declared apart (training.validation_pairs; then `fraction`
is 1), or else the ones training holds out (`train.val_fraction`, by a hash of the image
id), whether or not training runs, so fusion is never tuned on a pair the model learnt
from, nor on the test queries. An image is in one pair (its first caption). Both
directions use every such pair: its
caption finds its image among all held-out images (text → image), and its image finds
its caption (image → text). Re-ranking sees the queries in groups of ~1/10 of the
gallery, the contest's ratio of 5,000 queries to 50,000 items.
"""

from __future__ import annotations

import pandas as pd

from tuwen.data.splits import id_bucket, is_validation


def validation_manifests(
    images: pd.DataFrame, texts: pd.DataFrame, fraction: float, max_pairs: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give the image and caption manifests of the held-out pairs (accepted rows only).

    At most `max_pairs`, chosen by another hash of the id, so that tuning stays cheap on
    a large 附件1; the same pairs every run.
    """
    ok_images = images[images["status"] == "ok"].drop_duplicates("image_id")
    ok_texts = texts[(texts["status"] == "ok") & texts["image_id"].isin(set(ok_images["image_id"]))]
    ok_texts = ok_texts.drop_duplicates("image_id")
    held_out = ok_texts[ok_texts["image_id"].map(lambda i: is_validation(i, fraction))]
    if len(held_out) > max_pairs:
        order = (
            held_out["image_id"]
            .map(lambda i: id_bucket(i, "fusion-validation"))
            .to_numpy()
            .argsort(kind="stable")
        )
        held_out = held_out.iloc[order[:max_pairs]].sort_index()
    kept = set(held_out["image_id"])
    return ok_images[ok_images["image_id"].isin(kept)].reset_index(drop=True), held_out.reset_index(drop=True)


def validation_positives(texts: pd.DataFrame) -> dict[str, dict[str, set[str]]]:
    """Give the true targets of each validation query, per direction (a caption's id is its image's id)."""
    pairs = dict(zip(texts["text_id"], texts["image_id"], strict=True))
    return {
        "t2i": {text: {image} for text, image in pairs.items()},
        "i2t": {image: {text} for text, image in pairs.items()},
    }
