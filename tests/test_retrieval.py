"""Exact top-k: blockwise per-shard search plus merge equals a brute-force reference."""

import numpy as np
import pytest

from tuwen.ranking.exact import merge_topk, shard_topk


def normalised(rng, rows, dim=16):
    x = rng.normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_topk(queries, gallery, ids, k):
    """Score every pair in float64 and sort: cosine descending, then target id ascending."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    id_array = np.asarray(ids, dtype=str)
    return [id_array[np.lexsort((id_array, -row))][:k].tolist() for row in scores]


def search(queries, gallery, ids, k, shard_size, block_rows, scale=50.0):
    partials = [
        shard_topk(queries, gallery[s : s + shard_size], ids[s : s + shard_size], k, scale, block_rows)
        for s in range(0, len(ids), shard_size)
    ]
    return merge_topk(partials, [f"q{i}" for i in range(len(queries))], k, scale)


@pytest.mark.parametrize(("shard_size", "block_rows"), [(1000, 4096), (37, 7), (5, 3)])
def test_sharded_blockwise_topk_equals_brute_force(shard_size, block_rows):
    rng = np.random.default_rng(1)
    queries, gallery = normalised(rng, 40), normalised(rng, 300)
    ids = [f"Image-{i:04d}.jpg" for i in rng.permutation(300)]
    topk = search(queries, gallery, ids, 10, shard_size, block_rows)
    expected = reference_topk(queries, gallery, ids, 10)
    got = [group["target_id"].tolist() for _, group in topk.groupby("query_id", sort=False)]
    assert got == expected
    assert list(topk["query_id"].drop_duplicates()) == [f"q{i}" for i in range(40)]


def test_ties_are_broken_by_target_id_across_shards():
    rng = np.random.default_rng(2)
    queries = normalised(rng, 3)
    same = normalised(rng, 1)
    gallery = np.repeat(same, 8, axis=0)  # eight identical targets: every score ties
    ids = ["h", "c", "a", "f", "b", "g", "e", "d"]
    topk = search(queries, gallery, ids, 5, shard_size=3, block_rows=2)
    for _, group in topk.groupby("query_id"):
        assert group["target_id"].tolist() == ["a", "b", "c", "d", "e"]


def test_probabilities_are_softmax_over_the_whole_gallery():
    rng = np.random.default_rng(3)
    queries, gallery = normalised(rng, 4), normalised(rng, 50)
    ids = [f"t{i:02d}" for i in range(50)]
    scale = 30.0
    topk = search(queries, gallery, ids, 10, shard_size=7, block_rows=4, scale=scale)
    logits = scale * (queries.astype(np.float64) @ gallery.astype(np.float64).T)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    for row in topk.itertuples():
        q, t = int(row.query_id[1:]), ids.index(row.target_id)
        assert row.probability == pytest.approx(softmax[q, t], rel=1e-4)


def test_gallery_smaller_than_k_gives_every_target():
    rng = np.random.default_rng(4)
    topk = search(normalised(rng, 2), normalised(rng, 3), ["x", "y", "z"], 10, 2, 2)
    assert topk.groupby("query_id").size().tolist() == [3, 3]


def test_cached_partials_are_reused_only_while_valid_and_merge_exactly(tmp_path):
    """search_gallery's cache: a new shard is scored alone, the old shards' partials are read
    back; changed queries or a re-encoded item make a shard score again; results equal a
    search without the cache every time."""
    import pandas as pd

    from tuwen.files.parquet import FeatureShard, write_features
    from tuwen.ranking.exact import search_gallery

    rng = np.random.default_rng(3)
    queries = FeatureShard([f"q{i}" for i in range(7)], normalised(rng, 7), [""] * 7, {"logit_scale": 30.0})
    shards, rows = [], []
    for s in range(3):
        ids = [f"g{s}-{i:02d}" for i in range(20)]
        digests = [f"d{s}-{i}" for i in range(20)]
        path = tmp_path / "features" / f"s{s:05d}.parquet"
        write_features(path, ids, normalised(rng, 20), digests, {"logit_scale": 30.0})
        shards.append(path)
        rows += list(zip(ids, digests, strict=True))
    current = pd.DataFrame(rows, columns=["id", "digest"])
    cache = tmp_path / "cache"

    def both(paths, assignment, wanted=queries):
        fresh = search_gallery(wanted, paths, assignment, 5)
        cached = search_gallery(wanted, paths, assignment, 5, cache=cache)
        pd.testing.assert_frame_equal(cached, fresh)
        return {p.name: p.stat().st_mtime_ns for p in cache.glob("*.parquet")}

    first = both(shards[:2], current[current["id"].str.startswith(("g0", "g1"))])
    grown = both(shards, current)
    assert {n: grown[n] for n in first} == first and set(grown) == {f"s{s:05d}.parquet" for s in range(3)}
    # An item of shard 1 re-encoded into another shard: shard 1's partial is remade.
    moved = current.copy()
    moved.loc[moved["id"] == "g1-04", "digest"] = "elsewhere"
    after_move = both(shards, moved)
    assert after_move["s00001.parquet"] != grown["s00001.parquet"]
    assert after_move["s00000.parquet"] == grown["s00000.parquet"]
    # Other queries: every partial is remade.
    other = FeatureShard(queries.ids, normalised(rng, 7), [""] * 7, {"logit_scale": 30.0})
    after_queries = both(shards, moved, other)
    assert all(after_queries[n] != after_move[n] for n in after_move)
