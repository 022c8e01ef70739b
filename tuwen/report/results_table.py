"""Zero-shot beside fine-tuned, in the form of CN-CLIP's `Results.md`.

Per model and direction: R@1, R@5, R@10 and mean recall (×100, as CN-CLIP publishes them)
of the model before training (zero-shot) and of the weights its fine-tuning kept, on
validation (the training pairs held out) and on test (each judged task), so that a user
with real weights puts the rows beside CN-CLIP's published ones.
"""

from __future__ import annotations

import math

import pandas as pd

from tuwen.ranking.recall import RECALL_KS

ZERO_SHOT, FINE_TUNED = "zero-shot", "fine-tuned"
DIRECTION_TITLES = {"t2i": "text → image", "i2t": "image → text"}
METRICS = [*(f"R@{k}" for k in RECALL_KS), "MR"]


def _scores(metrics: dict | None) -> dict[str, float]:
    if not metrics:
        return dict.fromkeys(METRICS, math.nan)
    recalls = {f"R@{k}": 100 * metrics[f"R@{k}"] for k in RECALL_KS}
    return {**recalls, "MR": sum(recalls.values()) / len(recalls)}


def results_rows(
    models: list[str],
    validation: dict[str, dict],
    test: dict[tuple[str, str, str], dict],
    tasks: dict[str, str],
) -> pd.DataFrame:
    """Give the table's rows: one per model, direction and split.

    `validation[model]` is a fine-tuned model's val_metrics.json (before, after, kept);
    `test[(model, stage, task)]` a task's recall by that model's `base` or `finetune` stage;
    `tasks` maps each judged task to its direction (t2i, i2t).
    """
    rows = []
    for model in models:
        summary = validation.get(model)
        directions = sorted(set(tasks.values()), key=list(DIRECTION_TITLES).index)
        for direction in directions:
            if summary:
                rows.append(
                    _row(
                        model,
                        direction,
                        "validation",
                        "held-out pairs",
                        summary["before"][direction],
                        summary["after"][direction],
                        summary["kept"],
                    )
                )
            for task, task_direction in tasks.items():
                if task_direction != direction:
                    continue
                base, tuned = test.get((model, "base", task)), test.get((model, "finetune", task))
                kept = summary["kept"] if summary else "not fine-tuned"
                rows.append(_row(model, direction, "test", task, base, tuned, kept))
    return pd.DataFrame(rows)


def _row(model: str, direction: str, split: str, on: str, before, after, kept: str) -> dict:
    zero, tuned = _scores(before), _scores(after)
    return {
        "model": model,
        "direction": direction,
        "split": split,
        "on": on,
        **{f"{ZERO_SHOT} {m}": zero[m] for m in METRICS},
        **{f"{FINE_TUNED} {m}": tuned[m] for m in METRICS},
        "kept": kept,
    }


def results_markdown(rows: pd.DataFrame) -> str:
    """Give the table as Markdown, one table per direction, numbers to one decimal place."""
    lines = [
        "# Retrieval recall, zero-shot and fine-tuned",
        "",
        "R@1, R@5, R@10 and mean recall (MR) ×100, in the form of CN-CLIP's Results.md. "
        "Zero-shot is the model before training; fine-tuned the weights its fine-tuning kept "
        "(`kept`: an epoch, or zero-shot where no epoch was better on validation). Validation "
        "is the training pairs held out; test each task with ground truth.",
    ]

    def cell(value: float) -> str:
        return "—" if math.isnan(value) else f"{value:.1f}"

    for direction, group in rows.groupby("direction", sort=False):
        lines += ["", f"## {DIRECTION_TITLES[direction]}", ""]
        head = ["model", "split", *(f"zero-shot {m}" for m in METRICS), *(f"fine-tuned {m}" for m in METRICS)]
        lines.append("| " + " | ".join([*head, "kept"]) + " |")
        lines.append("|" + " --- |" * (len(head) + 1))
        for row in group.to_dict("records"):
            split = row["split"] if row["split"] == "validation" else f"test ({row['on']})"
            values = [cell(row[f"{stage} {m}"]) for stage in (ZERO_SHOT, FINE_TUNED) for m in METRICS]
            lines.append("| " + " | ".join([row["model"], split, *values, row["kept"]]) + " |")
    return "\n".join(lines) + "\n"
