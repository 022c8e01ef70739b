"""Snakemake entry point: one segment of a gallery's approximate index, its shards' rows added."""

import logging

from tuwen.data.shards import shard_number
from tuwen.logs import run_logged
from tuwen.ranking.index import build_segment, write_index


def main(snakemake) -> None:
    shards = list([(shard_number(path), path) for path in snakemake.input.features])
    index = build_segment(snakemake.input.trained, shards, snakemake.threads)
    write_index(index, snakemake.output[0])
    logging.info("segment of %d shards: %d rows", len(shards), index.ntotal)


run_logged(main, snakemake)
