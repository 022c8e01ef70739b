"""Snakemake entry point: read one caption table into its manifest and rejects report."""

import logging

import pandas as pd

from tuwen.data.ingest import read_text_set, rejects_of, status_counts, write_manifest, write_rejects
from tuwen.logs import run_logged
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    collection = read_settings(snakemake.input.settings)["collection"]
    images = pd.read_parquet(snakemake.input.images) if hasattr(snakemake.input, "images") else None
    table = snakemake.input.table
    manifest = read_text_set(table, collection["id_column"], collection["caption_column"], images)
    write_manifest(manifest, snakemake.output.manifest)
    write_rejects(rejects_of(manifest, "text_id", table), snakemake.output.rejects)
    logging.info("%s: %s", table, status_counts(manifest))


run_logged(main, snakemake)
