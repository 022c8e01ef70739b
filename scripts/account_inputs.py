"""Snakemake entry point: the run's accounting of every input id, for the log and the report."""

import logging
from pathlib import Path

import pandas as pd

from tuwen.accounting import collection_account, query_account
from tuwen.atomic import atomic_path
from tuwen.logs import run_logged
from tuwen.parquet import read_features


def main(snakemake) -> None:
    rows = []
    for manifest_path in snakemake.input.manifests:
        name = Path(manifest_path).parent.name
        manifest = pd.read_parquet(manifest_path)
        if name == "i2t_queries":
            continue
        features = [read_features(p) for p in snakemake.input.features if Path(p).parent.name == name]
        rows.append(collection_account(name, manifest, features))
    query_manifests = {"t2i": "t2i_queries/texts.parquet", "i2t": "i2t_queries/queries.parquet"}
    for task, topk_path, unencoded_path in zip(("t2i", "i2t"), snakemake.input.topk,
                                               snakemake.input.unencoded, strict=True):
        manifest_path = next(p for p in snakemake.input.manifests if p.endswith(query_manifests[task]))
        rows.append(query_account(task, pd.read_parquet(manifest_path), pd.read_parquet(topk_path),
                                  pd.read_csv(unencoded_path)))
    table = pd.DataFrame(rows)
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    logging.info("run summary:\n%s", table.to_string(index=False))


run_logged(main, snakemake)
