"""Snakemake entry point: one segment of a gallery's approximate index: its shards' codes, and
their rows in float16 for re-scoring."""

import logging

from tuwen.data.shards import shard_number
from tuwen.logs import run_logged
from tuwen.ranking.index import build_segment, rows_centre, write_rows, write_segment


def main(snakemake) -> None:
    shards = list([(shard_number(path), path) for path in snakemake.input.features])
    index = build_segment(snakemake.input.trained, shards, snakemake.threads)
    write_segment(index, snakemake.output.codes)
    write_rows(shards, snakemake.output.rows, rows_centre(index))
    logging.info("segment of %d shards: %d rows", len(shards), index.ntotal)


run_logged(main, snakemake)
