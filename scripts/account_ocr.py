"""Snakemake entry point: how many images OCR read text in, per collection, and every failure."""

import logging

import pandas as pd

from tuwen.files.atomic import atomic_path
from tuwen.logs import run_logged
from tuwen.report.accounting import OCR_FAILURE_COLUMNS, ocr_account


def main(snakemake) -> None:
    rows, failures = [], [pd.DataFrame(columns=OCR_FAILURE_COLUMNS)]
    for name, paths in snakemake.params.plan.items():
        row, failed = ocr_account(name, [pd.read_parquet(path) for path in paths])
        rows.append(row)
        failures.append(failed)
    with atomic_path(snakemake.output.counts) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, lineterminator="\n")
    with atomic_path(snakemake.output.failures) as tmp:
        pd.concat(failures, ignore_index=True).to_csv(tmp, index=False, lineterminator="\n")
    logging.info("OCR:\n%s", pd.DataFrame(rows).to_string(index=False))


run_logged(main, snakemake)
