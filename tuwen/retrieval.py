"""Similarity search: exact top-k over gallery shards, merged into one ranking per query.

Ranking order everywhere: cosine descending, ties broken by target id ascending, so a
result never depends on shard layout, block size or thread timing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tuwen.parquet import FeatureShard

PARTIAL_COLUMNS = ["query_index", "target_id", "cosine", "shard_logsumexp"]


def shard_topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    gallery_ids: list[str],
    k: int,
    logit_scale: float,
    block_rows: int = 4096,
) -> pd.DataFrame:
    """Give each query's top-`k` targets within one gallery shard.

    Rows: query_index, target_id, cosine, and the query's log-sum-exp of
    `logit_scale * cosine` over the whole shard (so the merge can give softmax
    probabilities over the whole gallery without seeing it again).
    """
    num_queries = len(queries)
    if len(gallery) == 0 or num_queries == 0:
        return pd.DataFrame(columns=PARTIAL_COLUMNS)
    order = np.argsort(np.asarray(gallery_ids, dtype=str), kind="stable")
    ids_by_order = np.asarray(gallery_ids, dtype=object)[order]
    gallery_t = torch.from_numpy(np.ascontiguousarray(gallery[order], dtype=np.float32))
    queries_t = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    keep = min(k, len(gallery))
    frames = []
    for start in range(0, num_queries, block_rows):
        sims = queries_t[start : start + block_rows] @ gallery_t.T
        logsumexp = torch.logsumexp(sims * logit_scale, dim=1).numpy()
        kth = torch.topk(sims, keep, dim=1).values[:, -1:]
        # Everything tied with the k-th score is a candidate; the sort below breaks ties by id.
        rows, cols = torch.nonzero(sims >= kth, as_tuple=True)
        values = sims[rows, cols].numpy()
        rows, cols = rows.numpy(), cols.numpy()
        by_rank = np.lexsort((cols, -values, rows))
        rows, cols, values = rows[by_rank], cols[by_rank], values[by_rank]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
        chosen = rank < keep
        rows, cols, values = rows[chosen], cols[chosen], values[chosen]
        frames.append(
            pd.DataFrame(
                {
                    "query_index": rows + start,
                    "target_id": ids_by_order[cols],
                    "cosine": values.astype(np.float32),
                    "shard_logsumexp": logsumexp[rows],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def merge_topk(
    partials: list[pd.DataFrame], query_ids: list[str], k: int, logit_scale: float
) -> pd.DataFrame:
    """Merge per-shard top-k lists into each query's global top-`k`, in query order.

    Rows: query_id, rank (1 = most similar), target_id, cosine, probability
    (softmax of `logit_scale * cosine` over every gallery item in every shard).
    """
    columns = ["query_id", "rank", "target_id", "cosine", "probability"]
    candidates = [p.assign(shard=i) for i, p in enumerate(partials) if len(p)]
    if not candidates:
        return pd.DataFrame(columns=columns)
    merged = pd.concat(candidates, ignore_index=True)
    per_shard = merged.drop_duplicates(["query_index", "shard"])
    total = per_shard.groupby("query_index")["shard_logsumexp"].apply(
        lambda s: float(np.logaddexp.reduce(s.to_numpy(dtype=np.float64)))
    )
    query_index = merged["query_index"].to_numpy()
    cosine = merged["cosine"].to_numpy()
    target = merged["target_id"].to_numpy(dtype=str)
    order = np.lexsort((target, -cosine, query_index))
    merged = merged.iloc[order].reset_index(drop=True)
    merged["rank"] = merged.groupby("query_index").cumcount() + 1
    merged = merged[merged["rank"] <= k]
    logits = logit_scale * merged["cosine"].to_numpy(dtype=np.float64)
    probability = np.exp(logits - total.loc[merged["query_index"]].to_numpy())
    return pd.DataFrame(
        {
            "query_id": np.asarray(query_ids, dtype=object)[merged["query_index"].to_numpy()],
            "rank": merged["rank"].to_numpy(dtype=np.int32),
            "target_id": merged["target_id"].to_numpy(),
            "cosine": merged["cosine"].to_numpy(dtype=np.float32),
            "probability": probability,
        },
        columns=columns,
    )


def select_features(
    wanted_ids: list[str], current: pd.DataFrame, shards: list[FeatureShard]
) -> tuple[list[str], np.ndarray, list[str]]:
    """Give the embeddings of `wanted_ids`, in that order, from feature shards.

    Only rows whose (id, digest) is in `current` (a collection's shard assignment)
    count, so an item re-encoded after a change never appears twice. Gives the found
    ids, their embeddings, and the wanted ids that have no current embedding.
    """
    digest_of = dict(zip(current["id"], current["digest"], strict=True))
    rows: dict[str, np.ndarray] = {}
    for shard in shards:
        for i, (item_id, digest) in enumerate(zip(shard.ids, shard.digests, strict=True)):
            if digest_of.get(item_id) == digest:
                rows[item_id] = shard.embeddings[i]
    found = [item_id for item_id in wanted_ids if item_id in rows]
    missing = [item_id for item_id in wanted_ids if item_id not in rows]
    dim = shards[0].embeddings.shape[1] if shards else 0
    matrix = np.stack([rows[i] for i in found]) if found else np.zeros((0, dim), np.float32)
    return found, matrix, missing
