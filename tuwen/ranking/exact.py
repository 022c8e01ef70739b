"""Exact search by one channel's cosine: each gallery shard's top-k, merged into one ranking
per query, and the partial top-k of each shard kept for the next run.

Ranking order everywhere: cosine descending, ties broken by target id ascending, so a
result never depends on shard layout, block size or thread timing (tuwen.ranking.scoring
ranks each block).

Numpy only: the search job must not pay torch's import (seconds) for a second of BLAS.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tuwen.files.parquet import FeatureShard, read_features, read_metadata, write_table
from tuwen.ranking.scoring import Ranking, rank_block
from tuwen.ranking.topk import merged_logsumexp, row_logsumexp, softmax

LOG = logging.getLogger(__name__)
PARTIAL_COLUMNS = ["query_index", "target_id", "cosine", "shard_logsumexp"]
TOPK_COLUMNS = ["query_id", "rank", "target_id", "cosine", "probability"]
# The one channel a search by cosine alone ranks by.
COSINE = "cosine"


def shard_topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    gallery_ids: list[str],
    k: int,
    logit_scale: float,
    block_rows: int = 256,
    threads: int = 1,
) -> pd.DataFrame:
    """Give each query's top-`k` targets within one gallery shard.

    Rows: query_index, target_id, cosine, and the query's log-sum-exp of
    `logit_scale * cosine` over the whole shard (so the merge can give softmax
    probabilities over the whole gallery without seeing it again). Blocks of
    `block_rows` queries run on `threads` threads (numpy releases the GIL); memory
    holds `threads` blocks of scores, whatever the number of queries.
    """
    if len(gallery) == 0 or len(queries) == 0:
        return pd.DataFrame(columns=PARTIAL_COLUMNS)
    order = np.argsort(np.asarray(gallery_ids, dtype=str), kind="stable")
    ids_by_order = np.asarray(gallery_ids, dtype=object)[order]
    gallery_t = np.ascontiguousarray(np.asarray(gallery, dtype=np.float32)[order].T)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    keep = min(k, len(gallery))
    by_cosine = Ranking(COSINE)

    def block(start: int) -> pd.DataFrame:
        sims = queries[start : start + block_rows] @ gallery_t
        ranked, _ = rank_block({COSINE: sims}, by_cosine, keep)
        logsumexp = row_logsumexp(sims, logit_scale)
        return pd.DataFrame(
            {
                "query_index": ranked.rows + start,
                "target_id": ids_by_order[ranked.columns],
                "cosine": ranked.scores.astype(np.float32),
                "shard_logsumexp": logsumexp[ranked.rows],
            }
        )

    starts = range(0, len(queries), block_rows)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return pd.concat(list(pool.map(block, starts)), ignore_index=True)


def merge_topk(
    partials: list[pd.DataFrame], query_ids: list[str], k: int, logit_scale: float
) -> pd.DataFrame:
    """Merge per-shard top-k lists into each query's global top-`k`, in query order.

    Rows: query_id, rank (1 = most similar), target_id, cosine, probability
    (softmax of `logit_scale * cosine` over every gallery item in every shard).
    """
    columns = TOPK_COLUMNS
    candidates = [p.assign(shard=i) for i, p in enumerate(partials) if len(p)]
    if not candidates:
        return pd.DataFrame(columns=columns)
    merged = pd.concat(candidates, ignore_index=True)
    per_shard = merged.drop_duplicates(["query_index", "shard"])
    with np.errstate(divide="ignore", invalid="ignore"):  # query numbers with no rows are never read
        total = merged_logsumexp(
            per_shard["shard_logsumexp"].to_numpy(np.float64), per_shard["query_index"].to_numpy(np.int64)
        )
    query_index = merged["query_index"].to_numpy()
    cosine = merged["cosine"].to_numpy()
    target = merged["target_id"].to_numpy(dtype=str)
    order = np.lexsort((target, -cosine, query_index))
    merged = merged.iloc[order].reset_index(drop=True)
    merged["rank"] = merged.groupby("query_index").cumcount() + 1
    merged = merged[merged["rank"] <= k]
    rows = merged["query_index"].to_numpy(np.int64)
    return pd.DataFrame(
        {
            "query_id": np.asarray(query_ids, dtype=object)[rows],
            "rank": merged["rank"].to_numpy(dtype=np.int32),
            "target_id": merged["target_id"].to_numpy(),
            "cosine": merged["cosine"].to_numpy(dtype=np.float32),
            "probability": softmax(merged["cosine"].to_numpy(), total[rows], logit_scale),
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
    dim = shards[0].embeddings.shape[1] if shards else 0
    if not shards:
        return [], np.zeros((0, dim), np.float32), list(wanted_ids)
    ids = np.concatenate([np.asarray(shard.ids, dtype=object) for shard in shards])
    digests = np.concatenate([np.asarray(shard.digests, dtype=object) for shard in shards])
    expected = pd.Series(current["digest"].to_numpy(), index=current["id"].to_numpy()).reindex(ids).to_numpy()
    is_current = expected == digests
    # A later shard's row wins, as it would in a dict filled shard by shard.
    row_of = pd.Series(np.flatnonzero(is_current), index=ids[is_current])
    row_of = row_of[~row_of.index.duplicated(keep="last")]
    rows = row_of.reindex(wanted_ids).to_numpy()
    present = ~np.isnan(rows) if rows.dtype.kind == "f" else np.ones(len(rows), dtype=bool)
    wanted = np.asarray(wanted_ids, dtype=object)
    embeddings = np.concatenate([shard.embeddings for shard in shards])
    matrix = embeddings[rows[present].astype(np.int64)].astype(np.float32, copy=False)
    return wanted[present].tolist(), matrix, wanted[~present].tolist()


def search_gallery(
    queries: FeatureShard,
    gallery_shards: Iterable[str | os.PathLike],
    current: pd.DataFrame,
    k: int,
    threads: int = 1,
    cache: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Give every query's top-`k` over all current items of a gallery's feature shards.

    Shards are read one at a time, so memory holds one shard and a few blocks of scores.
    `current` is the gallery's shard assignment (id, digest): only those rows count.
    With a `cache` folder, each shard's partial top-k is kept there and reused while the
    queries, `k`, the shard file and its current rows are unchanged, so a run that adds one
    shard scores only that shard (the merge is exact either way).
    """
    logit_scale = queries.metadata["logit_scale"]
    if cache is not None:
        query_key = _queries_key(queries, k, logit_scale)
        current_digest = pd.Series(current["digest"].to_numpy(), index=current["id"].to_numpy())
    partials, reused = [], 0
    for path in gallery_shards:
        cached = Path(cache) / f"{Path(path).stem}.parquet" if cache is not None else None
        if cached is not None:
            ids, digests = _shard_rows(path)
            key = _partial_key(query_key, path, ids, digests, current_digest)
            partial = _read_partial(cached, key)
            if partial is not None:
                partials.append(partial)
                reused += 1
                continue
        shard = read_features(path)
        ids, embeddings, _ = select_features(shard.ids, current, [shard])
        partial = shard_topk(queries.embeddings, embeddings, ids, k, logit_scale, threads=threads)
        if cached is not None:
            write_table(pa.Table.from_pandas(partial, preserve_index=False), cached, {"key": key})
        partials.append(partial)
    if cache is not None:
        LOG.info("partial top-k of %d of %d gallery shards reused from %s", reused, len(partials), cache)
    return merge_topk(partials, queries.ids, k, logit_scale)


def _queries_key(queries: FeatureShard, k: int, logit_scale: float) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(queries.embeddings, dtype=np.float32).tobytes())
    digest.update("\n".join(queries.ids).encode())
    digest.update(f"{k} {logit_scale!r}".encode())
    return digest.hexdigest()


def _shard_rows(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    table = pq.read_table(path, columns=["id", "digest"])
    return table.column("id").to_pylist(), table.column("digest").to_pylist()


def _partial_key(
    query_key: str, path: str | os.PathLike, ids: list[str], digests: list[str], current_digest: pd.Series
) -> str:
    """Give what a shard's partial top-k depends on: the queries, k, the shard file (size and
    time) and which of its rows are current (`current_digest`: each current id's digest; an
    item re-encoded elsewhere drops out)."""
    stat = os.stat(path)
    is_current = current_digest.reindex(ids).to_numpy() == np.asarray(digests, dtype=object)
    digest = hashlib.sha256(f"{query_key} {Path(path).name} {stat.st_size} {stat.st_mtime_ns}".encode())
    digest.update(np.packbits(is_current).tobytes())
    return digest.hexdigest()


def _read_partial(path: Path, key: str) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        if read_metadata(path).get("key") != key:
            return None
        return pq.read_table(path).to_pandas()
    except (OSError, ValueError, pa.ArrowInvalid):
        return None  # a damaged cache file is recomputed
