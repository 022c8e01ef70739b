"""Snakemake entry point: check a task's query list (the contest's image_test.csv) against its collection."""

import logging

import pandas as pd

from tuwen.data.ingest import read_query_list, rejects_of, status_counts, write_manifest, write_rejects
from tuwen.logs import run_logged
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    listed = read_settings(snakemake.input.settings)["task"]["query_list"]
    collection = pd.read_parquet(snakemake.input.collection)
    manifest = read_query_list(
        snakemake.input.table, collection, listed["id_column"], snakemake.params.collection_id_column
    )
    write_manifest(manifest, snakemake.output.manifest)
    write_rejects(rejects_of(manifest, "image_id", snakemake.input.table), snakemake.output.rejects)
    logging.info("%s: %s", snakemake.input.table, status_counts(manifest))


run_logged(main, snakemake)
