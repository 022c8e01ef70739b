"""Snakemake entry point: every query's top-K targets within one gallery shard."""

import logging

import pandas as pd
import pyarrow as pa
import torch

from tuwen.logs import run_logged
from tuwen.parquet import read_features, write_table
from tuwen.retrieval import select_features, shard_topk


def main(snakemake) -> None:
    torch.set_num_threads(snakemake.threads)
    queries = read_features(snakemake.input.queries)
    shard = read_features(snakemake.input.features)
    active = pd.read_parquet(snakemake.input.active)
    ids, gallery, _ = select_features(active["id"].tolist(), active, [shard])
    logit_scale = queries.metadata["logit_scale"]
    partial = shard_topk(queries.embeddings, gallery, ids, snakemake.params.keep_top, logit_scale)
    write_table(
        pa.Table.from_pandas(partial, preserve_index=False),
        snakemake.output[0],
        {"logit_scale": logit_scale, "gallery_items": len(ids)},
    )
    logging.info("%d queries x %d gallery items", len(queries.ids), len(ids))


run_logged(main, snakemake)
