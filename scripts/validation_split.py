"""Snakemake entry point: the validation pairs (declared apart, or held out of the training
pairs) as the collections of fusion's validation task."""

import logging

import pandas as pd
import pyarrow as pa

from tuwen.data.heldout import validation_manifests
from tuwen.files.parquet import write_table
from tuwen.logs import run_logged
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    settings = read_settings(snakemake.input.settings)
    # Validation pairs declared apart are all validation; else a share of the training pairs is.
    fraction = settings["train"]["val_fraction"] if snakemake.params.held_out else 1.0
    images, texts = validation_manifests(
        pd.read_parquet(snakemake.input.images),
        pd.read_parquet(snakemake.input.texts),
        fraction,
        settings["fusion"]["validation_max_pairs"],
    )
    write_table(pa.Table.from_pandas(images, preserve_index=False), snakemake.output.images)
    write_table(pa.Table.from_pandas(texts, preserve_index=False), snakemake.output.texts)
    logging.info("validation task: %d held-out pairs", len(texts))


run_logged(main, snakemake)
