"""Snakemake entry point: read one caption CSV into its manifest and rejects report."""

import logging

import pandas as pd

from tuwen.ingest import read_text_set, rejects_of, status_counts, write_manifest, write_rejects
from tuwen.logs import run_logged


def main(snakemake) -> None:
    images = pd.read_parquet(snakemake.input.images) if hasattr(snakemake.input, "images") else None
    manifest = read_text_set(snakemake.input.csv, snakemake.params.id_column, images)
    write_manifest(manifest, snakemake.output.manifest)
    write_rejects(rejects_of(manifest, "text_id", snakemake.input.csv), snakemake.output.rejects)
    logging.info("%s: %s", snakemake.input.csv, status_counts(manifest))


run_logged(main, snakemake)
