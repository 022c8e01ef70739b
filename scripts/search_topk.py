"""Snakemake entry point: every query's top-K over the whole gallery of one direction."""

import logging

import pandas as pd
import pyarrow as pa

from tuwen.files.parquet import read_features, write_table
from tuwen.logs import run_logged
from tuwen.ranking.exact import search_gallery
from tuwen.run import layout
from tuwen.run.settings import hits_kept, read_settings


def main(snakemake) -> None:
    keep_top = hits_kept(read_settings(snakemake.input.settings), read_settings(snakemake.input.task))
    queries = read_features(snakemake.input.queries)
    current = pd.read_parquet(snakemake.input.assignment, columns=["id", "digest"])
    topk = search_gallery(
        queries,
        snakemake.input.features,
        current,
        keep_top,
        threads=snakemake.threads,
        cache=layout.search_cache(snakemake.wildcards.task),
    )
    write_table(
        pa.Table.from_pandas(topk, preserve_index=False),
        snakemake.output[0],
        {"logit_scale": queries.metadata["logit_scale"], "model_tag": queries.metadata["model_tag"]},
    )
    logging.info(
        "top-%d of %d queries over %d gallery items in %d shards",
        keep_top,
        len(queries.ids),
        len(current),
        len(snakemake.input.features),
    )


run_logged(main, snakemake)
