"""Snakemake entry point: write the embedded demo dataset."""

import logging

from tuwen.data.demo import generate_demo
from tuwen.logs import run_logged
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    settings = read_settings(snakemake.input.settings)
    counts = generate_demo(
        snakemake.params.root, settings["demo"]["train_pairs"], settings["demo"]["queries"], settings["seed"]
    )
    logging.info("demo dataset written to %s: %s", snakemake.params.root, counts)


run_logged(main, snakemake)
