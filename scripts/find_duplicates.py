"""Snakemake entry point: an image collection's groups of exact and near copies."""

import logging

import pandas as pd

from tuwen.data.duplicates import duplicate_groups
from tuwen.files.atomic import atomic_path
from tuwen.logs import run_logged


def main(snakemake) -> None:
    hashes = pd.concat([pd.read_parquet(p) for p in snakemake.input.hashes], ignore_index=True)
    pairs = pd.concat([pd.read_parquet(p) for p in snakemake.input.pairs], ignore_index=True)
    # The current items only: a photo removed or changed since its shard was hashed is not one.
    current = pd.read_parquet(snakemake.input.assignment, columns=["id", "digest"])
    hashes = hashes.merge(current, on=["id", "digest"])
    groups = duplicate_groups(pairs, hashes)
    with atomic_path(snakemake.output[0]) as tmp:
        groups.to_csv(tmp, index=False, lineterminator="\n")
    kinds = groups["kind"].value_counts().to_dict()
    logging.info("%d groups of duplicates among %d images: %s", groups["group"].nunique(), len(hashes), kinds)


run_logged(main, snakemake)
