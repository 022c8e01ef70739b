"""Snakemake entry point: one image shard's perceptual hashes, and its pairs of duplicates with
itself and the shards before it."""

import logging

import pandas as pd
import pyarrow as pa

from tuwen.data.duplicates import HASH_COLUMNS, hash_pairs, perceptual_hashes
from tuwen.files.parquet import write_table
from tuwen.logs import run_logged
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    max_distance = read_settings(snakemake.input.settings)["duplicates"]["max_hash_distance"]
    hashes = perceptual_hashes(pd.read_parquet(snakemake.input.shard_list))
    earlier = [pd.read_parquet(path) for path in snakemake.input.earlier]
    before = pd.concat(earlier, ignore_index=True) if earlier else pd.DataFrame(columns=HASH_COLUMNS)
    pairs = hash_pairs(hashes, before, max_distance)
    write_table(pa.Table.from_pandas(hashes, preserve_index=False), snakemake.output.hashes)
    write_table(pa.Table.from_pandas(pairs, preserve_index=False), snakemake.output.pairs)
    logging.info("%d images hashed; %d pairs within %d bits", len(hashes), len(pairs), max_distance)


run_logged(main, snakemake)
