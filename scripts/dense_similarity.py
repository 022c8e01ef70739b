"""Snakemake entry point: the full query x gallery cosine matrix, for small sets."""

import numpy as np
import pandas as pd

from tuwen.files.atomic import atomic_path, write_text_atomic
from tuwen.files.parquet import read_features
from tuwen.logs import run_logged
from tuwen.ranking.exact import select_features


def main(snakemake) -> None:
    queries = read_features(snakemake.input.queries)
    current = pd.read_parquet(snakemake.input.assignment)
    shards = [read_features(path) for path in snakemake.input.features]
    ids, gallery, _ = select_features(current["id"].tolist(), current, shards)
    with atomic_path(snakemake.output.matrix) as tmp, open(tmp, "wb") as handle:
        np.save(handle, queries.embeddings @ gallery.T)
    write_text_atomic(snakemake.output.query_ids, "\n".join(queries.ids) + "\n")
    write_text_atomic(snakemake.output.target_ids, "\n".join(ids) + "\n")


run_logged(main, snakemake)
