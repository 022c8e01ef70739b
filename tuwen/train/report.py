"""What a fine-tuning run reports: the per-step log, validation before and after, the checkpoint."""

from __future__ import annotations

import csv
import io
import os

from cn_clip.clip.model import CLIP

from tuwen.clip.architectures import Architecture
from tuwen.clip.models import save_checkpoint
from tuwen.files.atomic import write_text_atomic
from tuwen.ranking.recall import RECALL_KS
from tuwen.train.state import TrainState

LOG_COLUMNS = ["step", "epoch", "loss", "lr", "logit_scale", "samples_per_s"]


def write_train_log(rows: list[dict], path: str | os.PathLike) -> None:
    """Write the per-step training log as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def validation_summary(state: TrainState, n_train: int, n_val: int, validated_on: str = "held out") -> dict:
    """Give val_metrics.json: recall before training, after each epoch, and of the kept
    weights (`best_epoch` 0 and `kept` "zero-shot" where no epoch beat the model before training);
    `validated_on` says whether the validation pairs were "held out" of the training pairs or
    "declared" apart (training.validation_pairs)."""
    if state.best_epoch == 0:
        best = {"epoch": 0, **state.before}
    else:
        best = next(e for e in state.epochs if e["epoch"] == state.best_epoch)
    return {
        "train_pairs": n_train,
        "validation_pairs": n_val,
        "validated_on": validated_on,
        "before": state.before,
        "epochs": state.epochs,
        "best_epoch": state.best_epoch,
        "kept": kept_label(state.best_epoch),
        "after": best,
    }


def kept_label(best_epoch: int) -> str:
    """Say which weights a fine-tuning kept: "zero-shot" (the model before training) or "epoch N"."""
    return "zero-shot" if best_epoch == 0 else f"epoch {best_epoch}"


def validation_rows(summary: dict) -> list[dict]:
    """Give the rows of val_metrics.csv: the model before training and at its kept epoch."""
    return [
        {
            "model": label,
            "epoch": epoch,
            **{f"{t} R@{k}": m[t][f"R@{k}"] for t in ("t2i", "i2t") for k in RECALL_KS},
            "mean_recall": m["mean_recall"],
        }
        for label, epoch, m in (
            ("before", 0, summary["before"]),
            ("after", summary["best_epoch"], summary["after"]),
        )
    ]


def save_fine_tuned(model: CLIP, arch: Architecture, path: str | os.PathLike, state: TrainState) -> None:
    """Save the kept model in cn_clip's checkpoint format."""
    save_checkpoint(model, path, arch, epoch=state.best_epoch, step=state.step)
