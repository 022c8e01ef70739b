"""Run cn_clip's own evaluation scripts on our predictions: the reference for recall figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd


def cn_clip_recall(topk: pd.DataFrame, positives: dict[str, set[str]], task: str, workdir: Path) -> dict:
    """Give cn_clip's R@1/5/10 and mean recall (as fractions) for a top-k table.

    cn_clip wants integer ids, exactly 10 predictions per query, and only scored queries
    in its answer file, so ids are numbered and the table is reduced to that form.
    """
    numbers: dict[str, int] = {}

    def number(item: str) -> int:
        return numbers.setdefault(item, len(numbers) + 1)

    query_key, target_key = ("text_id", "image_ids") if task == "t2i" else ("image_id", "text_ids")
    ranked = {q: g.sort_values("rank")["target_id"].tolist()[:10] for q, g in topk.groupby("query_id")}
    answers, predictions = [], []
    for query, targets in ranked.items():
        if query not in positives:
            continue
        answers.append({query_key: number(query), target_key: [number(t) for t in sorted(positives[query])]})
        predictions.append({query_key: number(query), target_key: [number(t) for t in targets]})
    for name, rows in (("answers.jsonl", answers), ("predictions.jsonl", predictions)):
        (workdir / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    module = "cn_clip.eval.evaluation" if task == "t2i" else "cn_clip.eval.evaluation_tr"
    subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            str(workdir / "answers.jsonl"),
            str(workdir / "predictions.jsonl"),
            str(workdir / "score.json"),
        ],
        check=True,
        capture_output=True,
    )
    score = json.loads((workdir / "score.json").read_text())
    assert score["success"], score
    figures = score["scoreJson"]
    return {
        "R@1": figures["r1"] / 100,
        "R@5": figures["r5"] / 100,
        "R@10": figures["r10"] / 100,
        "mean_recall": figures["mean_recall"] / 100,
    }


def run_cn_clip_evaluation(reference: Path, predictions: Path, task_direction: str, out: Path) -> dict:
    """Run cn_clip's own script (evaluation.py for t2i, evaluation_tr.py for i2t) on the files
    given; give the output JSON it writes."""
    module = "cn_clip.eval.evaluation" if task_direction == "t2i" else "cn_clip.eval.evaluation_tr"
    subprocess.run(
        [sys.executable, "-m", module, str(reference), str(predictions), str(out)],
        check=True,
        capture_output=True,
    )
    return json.loads(out.read_text())
