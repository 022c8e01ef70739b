"""Snakemake entry point: results/eval/fusion.csv, each channel and fusion on validation and test."""

import json
import logging

import numpy as np
import pandas as pd

from tuwen.files.atomic import atomic_path
from tuwen.logs import run_logged
from tuwen.ranking.channels import read_task
from tuwen.ranking.fusion import FusionRecipe, evaluate_settings
from tuwen.ranking.recall import read_positives
from tuwen.run.declaration import GroundTruth
from tuwen.run.settings import read_settings

COLUMNS = ["split", "task", "channels", "R@1", "R@5", "R@10", "chosen", "weights", "temperature"]


def main(snakemake) -> None:
    validation = pd.read_csv(snakemake.input.validation)
    rows = [validation]
    if snakemake.params.plan:
        truths = read_settings(snakemake.input.truth_settings)["ground_truth"]
        for task, plan in snakemake.params.plan.items():
            channels = read_task(plan)
            # Fusion is chosen per direction on validation; each task is scored with its direction's settings.
            on_task = validation[validation["task"] == plan["direction"]]
            settings = [
                FusionRecipe.from_dict(
                    {
                        "weights": json.loads(r.weights),
                        "temperature": None if np.isnan(r.temperature) else r.temperature,
                    }
                )
                for r in on_task.itertuples(index=False)
            ]
            groups = np.zeros(len(channels.query_ids), dtype=np.int64)  # all test queries are known at once
            positives = read_positives(GroundTruth(**truths[task]))
            evaluated = evaluate_settings(channels, settings, positives, groups)
            test = on_task.assign(split="test", task=task)
            for key in ("R@1", "R@5", "R@10"):
                test[key] = [item.recall[key] for item in evaluated]
            rows.append(test)
    table = pd.concat(rows, ignore_index=True)[COLUMNS]
    with atomic_path(snakemake.output.table) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n")
    logging.info("fusion:\n%s", table.to_string(index=False))


run_logged(main, snakemake)
