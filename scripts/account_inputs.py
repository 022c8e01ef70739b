"""Snakemake entry point: the run's accounting of every input id, for the log and the report."""

import logging
from pathlib import Path

import pandas as pd

from tuwen.accounting import NOT_ENCODED_COLUMNS, collection_account, not_encoded_report, query_account
from tuwen.atomic import atomic_path
from tuwen.logs import run_logged
from tuwen.parquet import read_features


def main(snakemake) -> None:
    rows, not_encoded = [], [pd.DataFrame(columns=NOT_ENCODED_COLUMNS)]
    for manifest_path in snakemake.input.manifests:
        name = Path(manifest_path).parent.name
        manifest = pd.read_parquet(manifest_path)
        if name in snakemake.params.encoded:
            features = [read_features(p) for p in snakemake.input.features if Path(p).parent.name == name]
            rows.append(collection_account(name, manifest, features))
            not_encoded.append(not_encoded_report(name, manifest, features))
        else:
            rows.append(collection_account(name, manifest, None))
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
    with atomic_path(snakemake.output.accounting) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    with atomic_path(snakemake.output.not_encoded) as tmp:
        pd.concat(not_encoded, ignore_index=True).to_csv(tmp, index=False, lineterminator="\n")
    logging.info("run summary:\n%s", table.to_string(index=False))


run_logged(main, snakemake)
