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
        encoded = name in snakemake.params.encoded
        features = [read_features(p) for p in snakemake.input.features if Path(p).parent.name == name]
        rows.append(collection_account(name, pd.read_parquet(manifest_path), features if encoded else None))
    for task, manifest_path, topk_path, unencoded_path in zip(
        ("t2i", "i2t"),
        snakemake.input.query_manifests,
        snakemake.input.topk,
        snakemake.input.unencoded,
        strict=True,
    ):
        rows.append(
            query_account(
                task, pd.read_parquet(manifest_path), pd.read_parquet(topk_path), pd.read_csv(unencoded_path)
            )
        )
    table = pd.DataFrame(rows).astype(
        {"encoded": "Int64", "not_encoded": "Int64", "truncated_captions": "Int64"}
    )
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    logging.info("run summary:\n%s", table.to_string(index=False))


run_logged(main, snakemake)
