"""Snakemake entry point: place a collection's current items in the append-only shard registry."""

import logging

import pandas as pd
import pyarrow as pa

from tuwen.data.shards import active_shards, assign_shards, registry_items
from tuwen.files.parquet import write_table
from tuwen.logs import run_logged


def main(snakemake) -> None:
    items = registry_items(pd.read_parquet(snakemake.input.manifest), snakemake.params.kind)
    # Read here, not as a param: a size applies to shards made from now on (old ones keep
    # their items), so changing it must rerun nothing.
    shard_size = snakemake.config["shards"][snakemake.params.shard_size_key]
    assignment = assign_shards(items, snakemake.params.registry, shard_size)
    write_table(pa.Table.from_pandas(assignment, preserve_index=False), snakemake.output.assignment)
    logging.info("%d items in shards %s", len(assignment), active_shards(assignment))


run_logged(main, snakemake)
