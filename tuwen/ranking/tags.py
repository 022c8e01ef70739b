"""Zero-shot tags: a labels file's labels ranked for every photo of a collection by the run's
model, as cn_clip's zero-shot classification ranks classes (`zeroshot_evaluation.py`): each
label's prompts are encoded and L2-normalised, averaged and normalised again; a photo's
probability of each label is the softmax of the model's logit scale times its cosines.

A labels file is one label a line (`.txt`; blank lines and lines starting with `#` are
skipped) or a table with a `label` column (CSV, TSV, JSON Lines, Parquet).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tuwen.errors import TuwenError
from tuwen.files.parquet import l2_normalised
from tuwen.files.records import read_records, single
from tuwen.ranking.topk import ranked_top, row_logsumexp, softmax

# `tags.templates: cn_clip`: the Chinese ImageNet prompts cn_clip's own zero-shot evaluation uses.
CN_CLIP_TEMPLATES = "cn_clip"
TAG_COLUMNS = ["id", "rank", "label", "score", "cosine"]
MAX_LABEL_CHARACTERS = 40  # a prompt must fit cn_clip's 52 tokens with its template


class LabelsError(TuwenError):
    """A labels file or a template the tags cannot be made from, naming the file and the row."""


def read_labels(path: str | os.PathLike) -> list[str]:
    """Give the labels of a labels file, in its order; one that is empty, repeated or too long
    is an error naming its row."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{path}: labels file does not exist (tags.labels)")
    if path.suffix.lower() in {".txt", ""}:
        text = path.read_text(encoding="utf-8-sig")
        rows = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
        rows = [(n, line) for n, line in rows if line and not line.startswith("#")]
        where = "line"
    else:
        records = read_records(path, ["label"])
        rows = [(n, single(row["label"], f"{path}, row {n}", "label")) for n, row in records.rows]
        where = "row"
    labels: dict[str, int] = {}
    for number, label in rows:
        if not label:
            raise LabelsError(f"{path}, {where} {number}: the label is empty")
        if len(label) > MAX_LABEL_CHARACTERS:
            raise LabelsError(
                f"{path}, {where} {number}: the label has {len(label)} characters; at most "
                f"{MAX_LABEL_CHARACTERS} (a label is a name, not a caption)"
            )
        if label in labels:
            raise LabelsError(f"{path}, {where} {number}: label {label!r} repeats {where} {labels[label]}")
        labels[label] = number
    if not labels:
        raise LabelsError(f"{path}: no labels (one label a line, or a table with a `label` column)")
    return list(labels)


def prompt_templates(setting: str | list[str]) -> list[str]:
    """Give the prompt templates (`{}` is the label): cn_clip's own, or the configured list."""
    if setting == CN_CLIP_TEMPLATES:
        from cn_clip.eval.imagenet_zeroshot_templates import openai_imagenet_template

        return [template("{}") for template in openai_imagenet_template]
    templates = [setting] if isinstance(setting, str) else list(setting)
    for number, template in enumerate(templates, 1):
        if template.count("{}") != 1:
            raise LabelsError(
                f"tags.templates, template {number} ({template!r}): must hold {{}} once, where the label goes"
            )
    return templates


def label_embeddings(
    encode: Callable[[list[str]], np.ndarray], labels: list[str], templates: list[str]
) -> np.ndarray:
    """Give each label's embedding (labels x D): its prompts encoded by `encode` (captions to
    embeddings), normalised, averaged and normalised again, as cn_clip's zero-shot classifier."""
    prompts = [template.format(label) for label in labels for template in templates]
    embedded = l2_normalised(np.asarray(encode(prompts), dtype=np.float32))
    per_label = embedded.reshape(len(labels), len(templates), -1).mean(axis=1)
    return l2_normalised(per_label)


def tag_table(
    ids: list[str],
    embeddings: np.ndarray,
    classifier: np.ndarray,
    labels: list[str],
    logit_scale: float,
    top: int,
) -> pd.DataFrame:
    """Give each photo's `top` labels, best first (ties by the labels' order): its probability
    over all labels (`score`) and its cosine to the label."""
    if not ids:
        return pd.DataFrame(columns=TAG_COLUMNS)
    cosines = l2_normalised(np.asarray(embeddings, dtype=np.float32)) @ classifier.T
    probabilities = softmax(cosines, row_logsumexp(cosines, logit_scale)[:, None], logit_scale)
    keep = min(top, len(labels))
    rows, columns, scores, ranks = ranked_top(probabilities, keep)
    return pd.DataFrame(
        {
            "id": np.asarray(ids, dtype=object)[rows],
            "rank": ranks + 1,
            "label": np.asarray(labels, dtype=object)[columns],
            "score": np.round(scores, 6),
            "cosine": np.round(cosines[rows, columns], 6),
        }
    )


def read_tags(path: str | os.PathLike) -> dict[str, list[str]]:
    """Give each photo's labels, best first, from a tags table."""
    table = pd.read_csv(path, dtype={"id": str, "label": str}, keep_default_na=False)
    return {item: list(group.sort_values("rank")["label"]) for item, group in table.groupby("id", sort=False)}
