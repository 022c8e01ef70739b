"""Snakemake entry point: check a task's query list (附件3/image_test.csv) against its collection."""

import logging

import pandas as pd

from tuwen.ingest import read_image_queries, rejects_of, status_counts, write_manifest, write_rejects
from tuwen.logs import run_logged


def main(snakemake) -> None:
    images = pd.read_parquet(snakemake.input.collection)
    manifest = read_image_queries(snakemake.input.csv, images)
    write_manifest(manifest, snakemake.output.manifest)
    write_rejects(rejects_of(manifest, "image_id", snakemake.input.csv), snakemake.output.rejects)
    logging.info("%s: %s", snakemake.input.csv, status_counts(manifest))


run_logged(main, snakemake)
