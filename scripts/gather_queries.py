"""Snakemake entry point: the query embeddings of one direction, in the query file's order."""

import logging

import pandas as pd

from tuwen.files.atomic import atomic_path
from tuwen.files.parquet import read_features, write_features
from tuwen.logs import run_logged
from tuwen.ranking.exact import select_features
from tuwen.report.accounting import encode_failures


def main(snakemake) -> None:
    order = pd.read_parquet(snakemake.input.order)
    wanted = order.loc[order["status"] == "ok", snakemake.params.id_column].tolist()
    shards = [read_features(path) for path in snakemake.input.features]
    current = pd.read_parquet(snakemake.input.assignment)
    ids, embeddings, missing = select_features(wanted, current, shards)
    digest_of = dict(zip(current["id"], current["digest"], strict=True))
    metadata = {k: v for k, v in shards[0].metadata.items() if k != "not_encoded"}
    write_features(
        snakemake.output.queries, ids, embeddings, [digest_of[i] for i in ids], metadata, normalise=False
    )
    reasons = encode_failures(shards)
    with atomic_path(snakemake.output.unencoded) as tmp:
        pd.DataFrame([(i, *reasons[i]) for i in missing], columns=["id", "reason_code", "reason"]).to_csv(
            tmp, index=False, lineterminator="\n"
        )
    logging.info("%d queries with embeddings, %d without", len(ids), len(missing))


run_logged(main, snakemake)
