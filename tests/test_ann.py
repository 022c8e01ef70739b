"""The approximate index (tuwen.ranking.index): its plans, recall against exact search, and growth by
segments that gives what a rebuild would."""

from __future__ import annotations

import numpy as np
import pytest

from bench.synthetic import Mixture, write_gallery
from tuwen.files.parquet import read_features
from tuwen.ranking.index import (
    IndexOptions,
    SegmentedIndex,
    auto_lists,
    build_segment,
    describe,
    exact_top,
    planned_training,
    row_ids,
    segment_plan,
    split_ids,
    train,
    trained_shards,
    training_sample,
    write_index,
)
from tuwen.ranking.recall import neighbour_recall


def test_segments_write_the_shard_count_in_the_base():
    assert segment_plan(61, 4) == [(0, 16), (16, 16), (32, 16), (48, 4), (52, 4), (56, 4), (60, 1)]
    assert segment_plan(62, 4)[:-1] == segment_plan(61, 4)  # a new shard: one new segment of one
    assert segment_plan(64, 4) == [(0, 64)]  # four of a size merge into one of the next
    assert segment_plan(0, 4) == [] and segment_plan(1, 2) == [(0, 1)]
    for count in range(1, 200):
        plan = segment_plan(count, 3)
        assert [start for start, _ in plan] == list(np.cumsum([0] + [n for _, n in plan[:-1]]))
        assert sum(n for _, n in plan) == count and len(plan) <= 2 * (1 + int(np.log(count) / np.log(3)))


def test_training_moves_only_when_the_gallery_has_grown_the_factor():
    assert [trained_shards(n, 4) for n in (0, 1, 3, 4, 15, 16, 63, 64)] == [0, 1, 1, 4, 4, 16, 16, 64]
    assert auto_lists(10) == 1 and auto_lists(1_000_000) == 4096 and auto_lists(50_000) == 1024


def test_ids_carry_the_shard_and_the_row():
    ids = row_ids(7, 3)
    assert list(split_ids(ids)[0]) == [7, 7, 7] and list(split_ids(ids)[1]) == [0, 1, 2]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ann")
    mixture = Mixture.spectral(clusters=300, dim=64, noise=0.08, seed=1)
    shards = write_gallery(mixture, folder / "features", items=9 * 1500, shard_size=1500, tag="t")
    return folder, mixture, shards


def built(folder, shards, count: int, base: int = 2):
    """The index over the first `count` shards, trained on the first one, segments by plan."""
    trained = folder / "trained.faiss"
    if not trained.exists():
        sample, lists = training_sample([shards[0][1]], None, seed=0)
        write_index(train(sample, lists), trained)
    paths = []
    for start, size in segment_plan(count, base):
        path = folder / f"segment-{start}-{size}.faiss"
        if not path.exists():
            write_index(build_segment(trained, shards[start : start + size]), path)
        paths.append(path)
    return trained, paths


def test_the_index_finds_the_exact_neighbours(gallery):
    folder, mixture, shards = gallery
    trained, segments = built(folder, shards, len(shards))
    index = SegmentedIndex(trained, segments, nprobe=8)
    assert index.items == 9 * 1500
    queries = mixture.draw(100, seed=99)
    exact = exact_top(queries, shards, 10)
    scores, found = index.search(queries, 10)
    assert neighbour_recall(found, exact) >= 0.9
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    # More lists scanned finds more; all of them is exact up to the 8-bit codes.
    everything = SegmentedIndex(trained, segments, nprobe=10_000)
    assert neighbour_recall(everything.search(queries, 10)[1], exact) >= max(
        neighbour_recall(found, exact), 0.97
    )
    # Queries that are gallery items find themselves first.
    own = read_features(shards[3][1]).embeddings[:20]
    shard, row = split_ids(index.search(own, 1)[1][:, 0])
    assert (shard == 3).all() and list(row) == list(range(20))


def test_a_grown_index_answers_as_one_built_at_once(gallery, tmp_path):
    """Adding shards adds segments; the old ones are kept, and the answers are a rebuild's."""
    _, mixture, shards = gallery
    (tmp_path / "grown").mkdir()
    trained, before = built(tmp_path / "grown", shards, 6)
    mtimes = {p: p.stat().st_mtime_ns for p in before}
    trained, after = built(tmp_path / "grown", shards, 7)
    kept = [p for p in after if p in mtimes]
    assert len(kept) == len(after) - 1 and all(p.stat().st_mtime_ns == mtimes[p] for p in kept)
    (tmp_path / "whole").mkdir()
    whole = build_segment(trained, shards[:7])
    write_index(whole, tmp_path / "whole" / "all.faiss")
    queries = mixture.draw(50, seed=7)
    grown = SegmentedIndex(trained, after, nprobe=8).search(queries, 10)
    rebuilt = SegmentedIndex(trained, [tmp_path / "whole" / "all.faiss"], nprobe=8).search(queries, 10)
    assert np.array_equal(grown[1], rebuilt[1]) and np.allclose(grown[0], rebuilt[0], atol=1e-5)


def test_a_training_moves_forward_with_growth_or_drift_and_never_back():
    assert planned_training(10, 4, None) == 4
    assert planned_training(10, 4, {"trained_on_shards": 4, "shards": 9, "retrain_due": False}) == 4
    assert planned_training(10, 4, {"trained_on_shards": 4, "shards": 9, "retrain_due": True}) == 9
    assert planned_training(12, 4, {"trained_on_shards": 9, "shards": 10, "retrain_due": False}) == 9
    assert planned_training(16, 4, {"trained_on_shards": 9, "shards": 15, "retrain_due": False}) == 16
    assert planned_training(5, 4, {"trained_on_shards": 9, "shards": 9, "retrain_due": False}) == 5


def test_rows_unlike_the_trained_ones_make_the_description_ask_for_retraining(tmp_path):
    """New shards from other clusters lie farther from the centroids: retrain_due."""
    like = Mixture.spectral(clusters=40, dim=32, noise=0.05, seed=1)
    unlike = Mixture.spectral(clusters=40, dim=32, noise=0.05, seed=2)
    shards = write_gallery(like, tmp_path / "f", items=2000, shard_size=500, tag="t")
    shards += write_gallery(unlike, tmp_path / "f", items=1000, shard_size=500, tag="t", first_shard=4)
    sample, lists = training_sample([p for _, p in shards[:4]], None, seed=0)
    trained = tmp_path / "trained-4.faiss"
    write_index(train(sample, lists), trained)
    segments = []
    for start, size in segment_plan(len(shards), 4):
        segments.append(tmp_path / f"segment-{start}-{size}.faiss")
        write_index(build_segment(trained, shards[start : start + size]), segments[-1])
    options = IndexOptions.defaults(nprobe=8, candidates=20)
    drifted = describe(trained, segments, shards, [], options, tmp_path, queries=50)
    fit = drifted["centroid_fit"]
    assert drifted["retrain_due"] and fit["trained"] - fit["since"] > options.retrain_drift
    # The same shards, nothing added since training: nothing to retrain for.
    same = describe(trained, segments[:1], shards[:4], [], options, tmp_path, queries=50)
    assert same["centroid_fit"]["since"] is None and not same["retrain_due"]
    assert planned_training(6, 4, drifted) == 6 and planned_training(6, 4, same) == 4
