"""Snakemake entry point: results/eval/fusion.csv, each channel and fusion on validation and test."""

import logging

import pandas as pd

from tuwen.files.atomic import atomic_path
from tuwen.logs import run_logged
from tuwen.ranking.channels import read_task
from tuwen.ranking.recall import read_positives
from tuwen.ranking.tuning import TABLE_COLUMNS, test_rows
from tuwen.run.declaration import GroundTruth
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    validation = pd.read_csv(snakemake.input.validation)
    rows = [validation]
    if snakemake.params.plan:
        truths = read_settings(snakemake.input.truth_settings)["ground_truth"]
        for task, plan in snakemake.params.plan.items():
            # Fusion is chosen per direction on validation; each task is scored with its direction's recipes.
            positives = read_positives(GroundTruth(**truths[task]))
            rows.append(test_rows(task, read_task(plan), validation, plan["direction"], positives))
    table = pd.concat(rows, ignore_index=True)[TABLE_COLUMNS]
    with atomic_path(snakemake.output.table) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n")
    logging.info("fusion:\n%s", table.to_string(index=False))


run_logged(main, snakemake)
