"""Result tables in the contest's exact CSV formats."""

from __future__ import annotations

import os

import pandas as pd

from tuwen.atomic import atomic_path

TABLE_COLUMNS = {
    "t2i": ["text_id", "similarity_ranking", "result_image_id"],
    "i2t": ["image_id", "similarity_ranking", "result_text_id"],
}
TABLE_RANKS = 5


def result_table(topk: pd.DataFrame, task: str) -> pd.DataFrame:
    """Give the result table of `task` from a top-k table: 5 rows per query, in query order."""
    kept = topk[topk["rank"] <= TABLE_RANKS]
    query, rank, target = TABLE_COLUMNS[task]
    return pd.DataFrame(
        {
            query: kept["query_id"].to_numpy(),
            rank: kept["rank"].to_numpy(),
            target: kept["target_id"].to_numpy(),
        },
        columns=TABLE_COLUMNS[task],
    )


def write_result_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a result table as UTF-8 CSV with LF line ends, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")
