"""Result tables in the contest's exact CSV formats."""

from __future__ import annotations

import os

import pandas as pd

from tuwen.files.atomic import atomic_path

TABLE_RANKS = 5  # the contest's rows per query


def result_table(
    topk: pd.DataFrame, columns: list[str] | tuple[str, ...], k: int = TABLE_RANKS
) -> pd.DataFrame:
    """Give a result table from a top-k table: `k` rows per query, in query order, under the
    task's `columns` (query id, rank, target id; tuwen.run.declaration.Task.columns)."""
    kept = topk[topk["rank"] <= k]
    query, rank, target = columns
    return pd.DataFrame(
        {
            query: kept["query_id"].to_numpy(),
            rank: kept["rank"].to_numpy(),
            target: kept["target_id"].to_numpy(),
        },
        columns=list(columns),
    )


def write_result_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a result table as UTF-8 CSV with LF line ends, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")
