"""Snakemake entry point: merge per-shard top-K lists into one ranking per query."""

import logging

import pandas as pd
import pyarrow as pa

from tuwen.logs import run_logged
from tuwen.parquet import read_features, write_table
from tuwen.retrieval import merge_topk


def main(snakemake) -> None:
    queries = read_features(snakemake.input.queries)
    partials = [pd.read_parquet(path) for path in snakemake.input.partials]
    logit_scale = queries.metadata["logit_scale"]
    topk = merge_topk(partials, queries.ids, snakemake.params.keep_top, logit_scale)
    write_table(
        pa.Table.from_pandas(topk, preserve_index=False),
        snakemake.output[0],
        {"logit_scale": logit_scale, "model_tag": queries.metadata["model_tag"]},
    )
    logging.info(
        "top-%d of %d queries over %d shards", snakemake.params.keep_top, len(queries.ids), len(partials)
    )


run_logged(main, snakemake)
