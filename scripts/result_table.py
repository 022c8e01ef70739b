"""Snakemake entry point: a contest result table (result1.csv or result2.csv) from top-K."""

import logging

import pandas as pd

from tuwen.logs import run_logged
from tuwen.tables import result_table, write_result_table


def main(snakemake) -> None:
    table = result_table(pd.read_parquet(snakemake.input.topk), snakemake.params.columns)
    write_result_table(table, snakemake.output[0])
    logging.info("%d rows for %d queries", len(table), table.iloc[:, 0].nunique())


run_logged(main, snakemake)
