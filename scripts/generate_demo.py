"""Snakemake entry point: write the embedded demo dataset."""

import logging

from tuwen.demo import generate_demo
from tuwen.logs import run_logged


def main(snakemake) -> None:
    counts = generate_demo(
        snakemake.params.root, snakemake.params.train_pairs, snakemake.params.queries, snakemake.params.seed
    )
    logging.info("demo dataset written to %s: %s", snakemake.params.root, counts)


run_logged(main, snakemake)
