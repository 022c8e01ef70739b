"""Snakemake entry point: train a gallery's approximate index on its first shards (tuwen.ranking.index)."""

import logging

from tuwen.logs import run_logged
from tuwen.ranking.index import train, training_sample, write_index
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    settings = read_settings(snakemake.input.settings)["index"]
    lists = None if settings["lists"] == "auto" else int(settings["lists"])
    sample, lists = training_sample(snakemake.input.features, lists, 0, settings["retrain_growth"])
    index = train(sample, lists, settings["codes"], snakemake.threads)
    write_index(index, snakemake.output[0])
    logging.info(
        "trained %d lists on %d vectors of %d shards", lists, len(sample), len(snakemake.input.features)
    )


run_logged(main, snakemake)
