"""Snakemake entry point: Recall@1/5/10 and mean recall of both directions against ground
truth, and each task's files in cn_clip's evaluation format."""

import json
import logging
from pathlib import Path

import pandas as pd

from tuwen.files.atomic import atomic_path, write_text_atomic
from tuwen.logs import run_logged
from tuwen.ranking.recall import RECALL_KS, rankings_of, read_positives, recall_at_k, summarise
from tuwen.report.cn_clip_format import write_cn_clip_files
from tuwen.run import layout
from tuwen.run.declaration import GroundTruth
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    truths = read_settings(snakemake.input.settings)["ground_truth"]
    per_task = {}
    for task, topk_path, assignment_path in zip(
        snakemake.params.tasks, snakemake.input.topk, snakemake.input.gallery_assignments, strict=True
    ):
        gallery = set(pd.read_parquet(assignment_path)["id"])
        rankings, positives = (
            rankings_of(pd.read_parquet(topk_path)),
            read_positives(GroundTruth(**truths[task])),
        )
        per_task[task] = recall_at_k(rankings, positives, gallery)
        folder = Path(layout.cn_clip_evaluation(task, "output.json")).parent
        output = write_cn_clip_files(folder, snakemake.params.tasks[task], rankings, positives, gallery)
        logging.info("%s in cn_clip's evaluation: %s", task, output)
    metrics = summarise(per_task)
    write_text_atomic(snakemake.output.metrics, json.dumps(metrics, indent=2) + "\n")
    rows = [
        {
            "direction": task,
            **{f"R@{k}": m[f"R@{k}"] for k in RECALL_KS},
            "mean_recall": m["mean_recall"],
            "queries_scored": m["queries_scored"],
        }
        for task, m in per_task.items()
    ]
    rows.append({"direction": "both", "mean_recall": metrics["mean_recall"]})
    with atomic_path(snakemake.output.table) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n")
    logging.info("metrics: %s", metrics)


run_logged(main, snakemake)
