"""Snakemake entry point: a task's result table (the contest's result1.csv or result2.csv) from top-K."""

import logging

import pandas as pd

from tuwen.logs import run_logged
from tuwen.report.tables import result_table, write_result_table
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    task = read_settings(snakemake.input.task)["task"]
    table = result_table(pd.read_parquet(snakemake.input.topk), task["columns"], task["k"])
    write_result_table(table, snakemake.output[0])
    logging.info("%d rows for %d queries", len(table), table.iloc[:, 0].nunique())


run_logged(main, snakemake)
