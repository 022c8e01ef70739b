"""Snakemake entry point: the record of the finished run, which its readers trust (tuwen.finished)."""

import logging
from pathlib import Path

from tuwen.finished.record import write_record
from tuwen.logs import run_logged


def main(snakemake) -> None:
    record = write_record(Path.cwd(), snakemake.params.plan, Path(snakemake.output[0]))
    logging.info("finished run: %d files recorded", len(record["stamps"]))


run_logged(main, snakemake)
