"""Snakemake entry point: the run's accounting of every input id, for the log and the report."""

import logging

import pandas as pd

from tuwen.files.atomic import atomic_path
from tuwen.files.parquet import read_features
from tuwen.logs import run_logged
from tuwen.report.accounting import NOT_ENCODED_COLUMNS, collection_account, not_encoded_report, query_account


def main(snakemake) -> None:
    plan = snakemake.params.plan
    rows, not_encoded = [], [pd.DataFrame(columns=NOT_ENCODED_COLUMNS)]
    for name, files in plan["collections"].items():
        manifest = pd.read_parquet(files["manifest"])
        if files["features"] is None:
            rows.append(collection_account(name, manifest, files["id_column"], None))
            continue
        features = [read_features(path) for path in files["features"]]
        rows.append(collection_account(name, manifest, files["id_column"], features))
        not_encoded.append(not_encoded_report(name, manifest, files["id_column"], features))
    for task, files in plan["tasks"].items():
        rows.append(
            query_account(
                task,
                pd.read_parquet(files["order"]),
                files["id_column"],
                pd.read_parquet(files["topk"]),
                pd.read_csv(files["unencoded"]),
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
