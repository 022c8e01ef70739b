"""A judged task's results as cn_clip's own evaluation reads them, and the numbers it prints.

cn_clip scores retrieval with `cn_clip/eval/evaluation.py` (text → image) and
`evaluation_tr.py` (image → text): a reference JSONL of each query's true ids, a predictions
JSONL of exactly 10 distinct integer ids per query, and an output JSON of R@1/5/10 and their
mean, ×100, over every query of the reference. tuwen writes those three files per task, so
that a user runs cn_clip's script on them and gets the row to put beside CN-CLIP's
`Results.md`; the output tuwen writes is the one cn_clip's script writes on them.

cn_clip wants integer ids. Where every id of a task is a whole number as written (CN-CLIP's
own datasets), it is kept; otherwise queries and gallery items are numbered by their sorted
order, and `ids.csv` gives each number's id.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tuwen.files.atomic import atomic_path, write_text_atomic
from tuwen.ranking.recall import RECALL_KS, recall_at_k
from tuwen.run.declaration import IMAGES, TEXTS

CN_CLIP_K = 10  # cn_clip's scripts take exactly 10 predictions per query
# The fields of each direction's files, as cn_clip's two scripts name them.
FIELDS = {TEXTS: ("text_id", "image_ids"), IMAGES: ("image_id", "text_ids")}


@dataclass(frozen=True)
class Numbering:
    """cn_clip's integer for each query and gallery id of a task."""

    queries: dict[str, int]
    gallery: dict[str, int]
    as_given: bool  # the ids were whole numbers already

    @classmethod
    def of(cls, query_ids: list[str], gallery_ids: list[str]) -> Numbering:
        ids = [*query_ids, *gallery_ids]
        if all(_is_whole_number(i) for i in ids):
            return cls({q: int(q) for q in query_ids}, {g: int(g) for g in gallery_ids}, True)
        return cls(
            {q: n for n, q in enumerate(sorted(set(query_ids)))},
            {g: n for n, g in enumerate(sorted(set(gallery_ids)))},
            False,
        )

    def table(self) -> pd.DataFrame:
        rows = [("query", i, n) for i, n in self.queries.items()]
        rows += [("gallery", i, n) for i, n in self.gallery.items()]
        return pd.DataFrame(rows, columns=["side", "id", "cn_clip_id"]).sort_values(
            ["side", "cn_clip_id"], ascending=[False, True], kind="stable"
        )


def _is_whole_number(value: str) -> bool:
    return value.isascii() and value.isdigit() and str(int(value)) == value


def cn_clip_output(metrics: dict) -> dict:
    """Give cn_clip's output JSON for tuwen's recall of a task (fractions → ×100)."""
    recalls = [metrics[f"R@{k}"] * 100 for k in RECALL_KS]
    mean = sum(recalls) / len(recalls)
    r1, r5, r10 = recalls
    return {
        "success": True,
        "score": mean,
        "scoreJson": {"score": mean, "mean_recall": mean, "r1": r1, "r5": r5, "r10": r10},
    }


def write_cn_clip_files(
    folder: str | os.PathLike,
    query_kind: str,
    rankings: dict[str, list[str]],
    positives: dict[str, set[str]],
    gallery_ids: set[str],
) -> dict:
    """Write a task's reference, predictions, ids and output into `folder`; give the output.

    The reference holds the queries tuwen scores (those with a true id in the gallery), so
    cn_clip's denominator is tuwen's. A gallery of fewer than 10 items cannot be scored by
    cn_clip's scripts: the output then says so, and the other files are empty.
    """
    folder = Path(folder)
    query_field, hits_field = FIELDS[query_kind]
    scored = sorted(q for q in rankings if positives.get(q, set()) & gallery_ids)
    numbering = Numbering.of(scored, sorted(gallery_ids))
    short = [q for q in scored if len(rankings[q]) < CN_CLIP_K]
    if short:
        output = {
            "success": False,
            "errorMsg": f"{len(short)} queries have fewer than {CN_CLIP_K} hits (a gallery of "
            f"{len(gallery_ids)} items); cn_clip's evaluation takes exactly {CN_CLIP_K} per query",
        }
        reference_lines, prediction_lines = [], []
    else:
        output = cn_clip_output(recall_at_k({q: rankings[q] for q in scored}, positives, gallery_ids))
        reference_lines = [
            {
                query_field: numbering.queries[q],
                hits_field: sorted(numbering.gallery[t] for t in positives[q] & gallery_ids),
            }
            for q in scored
        ]
        prediction_lines = [
            {
                query_field: numbering.queries[q],
                hits_field: [numbering.gallery[t] for t in rankings[q][:CN_CLIP_K]],
            }
            for q in scored
        ]
    for name, lines in (("reference.jsonl", reference_lines), ("predictions.jsonl", prediction_lines)):
        write_text_atomic(folder / name, "".join(json.dumps(line) + "\n" for line in lines))
    with atomic_path(folder / "ids.csv") as tmp:
        numbering.table().to_csv(tmp, index=False, lineterminator="\n")
    output["ids"] = "as given" if numbering.as_given else "numbered by sorted id: ids.csv"
    write_text_atomic(folder / "output.json", json.dumps(output, indent=2) + "\n")
    return output
