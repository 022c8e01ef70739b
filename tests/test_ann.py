"""The approximate index (tuwen.ranking.index): its plans, recall against exact search, and growth by
segments that gives what a rebuild would."""

from __future__ import annotations

import numpy as np
import pytest

from bench.index import mapped_kb
from bench.synthetic import Mixture, write_gallery
from tuwen.files.parquet import read_features
from tuwen.ranking.index import (
    IndexOptions,
    SegmentedIndex,
    SegmentRows,
    auto_lists,
    build_segment,
    describe,
    exact_top,
    exact_top_scored,
    planned_training,
    probes,
    row_ids,
    rows_centre,
    segment_plan,
    split_ids,
    train,
    trained_shards,
    training_sample,
    write_index,
    write_rows,
    write_segment,
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
    # Trained on a quarter of what it will hold: lists for the four times as many.
    assert auto_lists(262_144) == 2048 and auto_lists(262_144, growth=4) == 4096
    assert auto_lists(50_000, growth=4) == 1024  # no fewer than 40 training points a list
    assert auto_lists(4_194_304, growth=4) == 16384  # 10M items, trained on their first 256 shards
    assert auto_lists(10**9, growth=4) == 16384
    # index.nprobe is for 4,096 lists: more lists, each holding fewer items, are probed more.
    assert [probes(64, lists) for lists in (32, 1024, 4096, 8192, 16384)] == [32, 64, 64, 76, 91]


def test_ids_carry_the_shard_and_the_row():
    ids = row_ids(7, 3)
    assert list(split_ids(ids)[0]) == [7, 7, 7] and list(split_ids(ids)[1]) == [0, 1, 2]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ann")
    mixture = Mixture.spectral(clusters=300, dim=64, noise=0.08, seed=1)
    shards = write_gallery(mixture, folder / "features", items=9 * 1500, shard_size=1500, tag="t")
    return folder, mixture, shards


def built(folder, shards, count: int, base: int = 2, codes: str = "pq4fs"):
    """The index over the first `count` shards, trained on the first one, segments by plan:
    (trained, segments, rows files)."""
    trained = folder / "trained.faiss"
    if not trained.exists():
        sample, lists = training_sample([shards[0][1]], None, seed=0)
        write_index(train(sample, lists, codes), trained)
    paths, rows = [], []
    for start, size in segment_plan(count, base):
        path = folder / f"segment-{start}-{size}.faiss"
        if not path.exists():
            segment = build_segment(trained, shards[start : start + size])
            write_segment(segment, path)
            write_rows(shards[start : start + size], path.with_suffix(".rows"), rows_centre(segment))
        paths.append(path)
        rows.append(path.with_suffix(".rows"))
    return trained, paths, rows


def test_the_index_finds_the_exact_neighbours(gallery):
    folder, mixture, shards = gallery
    trained, segments, rows = built(folder, shards, len(shards))
    index = SegmentedIndex(trained, segments, rows, nprobe=8, rescored=300)
    assert index.items == 9 * 1500 and index.factory == "IVF32_HNSW32,PQ32x4fs"
    queries = mixture.draw(100, seed=99)
    exact = exact_top(queries, shards, 10)
    scores, found = index.search(queries, 10)
    assert neighbour_recall(found, exact) >= 0.9
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    # More lists scanned finds more; all of them, re-scored, is exact.
    assert neighbour_recall(index.search(queries, 10, nprobe=10_000)[1], exact) >= max(
        neighbour_recall(found, exact), 0.99
    )
    # Queries that are gallery items find themselves first.
    own = read_features(shards[3][1]).embeddings[:20]
    shard, row = split_ids(index.search(own, 1)[1][:, 0])
    assert (shard == 3).all() and list(row) == list(range(20))


def test_re_scored_answers_carry_the_rows_cosines(gallery):
    """The codes choose the candidates; the scores returned are the rows' own cosines (to
    float16's precision), where the codes' scores alone are off by far more."""
    folder, mixture, shards = gallery
    trained, segments, rows = built(folder, shards, len(shards))
    queries = mixture.draw(40, seed=5)
    vectors = {number: read_features(path).embeddings for number, path in shards}

    def true_cosines(found):
        parts = zip(*split_ids(found), strict=True)
        return np.array(
            [
                [vectors[s][r] @ q for s, r in zip(*p, strict=True)]
                for p, q in zip(parts, queries, strict=True)
            ]
        )

    rescored = SegmentedIndex(trained, segments, rows, nprobe=16, rescored=100)
    scores, found = rescored.search(queries, 10)
    assert np.abs(scores - true_cosines(found)).max() < 2e-3
    codes_only = SegmentedIndex(trained, segments, rows, nprobe=16, rescored=0)
    code_scores, code_found = codes_only.search(queries, 10)
    assert (
        np.abs(code_scores - true_cosines(code_found)).max() > 10 * np.abs(scores - true_cosines(found)).max()
    )
    # Re-scoring finds more of the exact top 10 than the codes' own order does.
    exact = exact_top(queries, shards, 10)
    assert neighbour_recall(found, exact) > neighbour_recall(code_found, exact)


def test_a_segment_reuses_the_trained_quantizer_and_codebook(gallery, tmp_path):
    """Every segment is built from the one trained file: the same PQ codebook, byte for byte,
    and no centroids of its own (an empty stand-in): the loaded index holds one quantizer, the
    trained file's, for all its segments. A segment of another training, and an untrained
    index, are refused."""
    import faiss

    folder, mixture, shards = gallery
    trained, segments, rows = built(folder, shards, len(shards))
    reference = faiss.read_index(str(trained))

    def parts_of(index):  # (`index` is held by the caller: faiss's views into it do not hold it)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        return faiss.downcast_index(ivf.quantizer).reconstruct_n(0, ivf.nlist), faiss.vector_to_array(
            ivf.pq.centroids
        )

    want = parts_of(reference)[1]
    assert reference.ntotal == 0 and len(segments) == 2
    for path in segments:
        segment = faiss.read_index(str(path))
        ivf = faiss.downcast_index(faiss.extract_index_ivf(segment))
        assert ivf.quantizer.ntotal == 0 and ivf.ntotal > 0
        assert np.array_equal(faiss.vector_to_array(ivf.pq.centroids), want)
    # Loaded, the segments' codes are one index with the trained file's centroids.
    index = SegmentedIndex(trained, segments, rows, nprobe=8, rescored=300)
    assert index.codes.ntotal == index.items == len(shards) * 1500
    assert np.array_equal(index.quantizer.reconstruct_n(0, index.lists), parts_of(reference)[0])
    # A segment written whole (its centroids inside, as before the stand-in) answers the same.
    whole = build_segment(trained, shards)
    write_index(whole, tmp_path / "whole.faiss")
    write_rows(shards, tmp_path / "whole.rows", rows_centre(whole))
    queries = mixture.draw(20, seed=5)
    legacy = SegmentedIndex(trained, [tmp_path / "whole.faiss"], [tmp_path / "whole.rows"], 8, 300)
    assert np.array_equal(legacy.search(queries, 10)[1], index.search(queries, 10)[1])
    other = tmp_path / "other.faiss"
    sample, lists = training_sample([shards[1][1]], None, seed=1)
    write_index(train(sample, lists, "pq4fs"), other)
    with pytest.raises(ValueError, match="another training"):
        SegmentedIndex(other, [tmp_path / "whole.faiss"], [tmp_path / "whole.rows"], 8, 300)
    empty = faiss.index_factory(64, "IVF4,PQ32x4fs", faiss.METRIC_INNER_PRODUCT)
    write_index(empty, tmp_path / "untrained.faiss")
    with pytest.raises(ValueError, match="not a trained index"):
        build_segment(tmp_path / "untrained.faiss", shards[:1])


def test_one_query_split_between_threads_answers_as_one_thread(gallery, monkeypatch):
    """Both cores for one query: its probes are split between threads (each scanning every
    segment's share of its lists), and the answer is the one thread's."""
    import tuwen.ranking.index as ann

    folder, mixture, shards = gallery
    trained, segments, rows = built(folder, shards, len(shards))
    queries = mixture.draw(30, seed=11)
    alone = SegmentedIndex(trained, segments, rows, nprobe=8, rescored=100, threads=1)
    monkeypatch.setattr(ann, "PARALLEL_CODES", 0)
    split = SegmentedIndex(trained, segments, rows, nprobe=8, rescored=100, threads=2)
    assert split._pool is not None and alone._pool is None
    for kind in (None, 3):  # the index's nprobe, and an odd one
        one, two = alone.search(queries, 10, kind), split.search(queries, 10, kind)
        assert np.array_equal(one[1], two[1]) and np.allclose(one[0], two[0])


def test_many_lists_are_trained_by_two_level_k_means(gallery, tmp_path, monkeypatch):
    """Beyond FLAT_KMEANS_LISTS lists the centroids come from two-level k-means: as many as
    asked, each the centre of its rows, and the index they make finds the exact neighbours."""
    import tuwen.ranking.index as ann

    _, mixture, shards = gallery
    monkeypatch.setattr(ann, "FLAT_KMEANS_LISTS", 16)
    sample, _ = training_sample([p for _, p in shards[:3]], 64, seed=0)
    write_index(train(sample, 64, "pq4fs"), tmp_path / "trained.faiss")
    segment = build_segment(tmp_path / "trained.faiss", shards)
    write_segment(segment, tmp_path / "all.faiss")
    write_rows(shards, tmp_path / "all.rows", rows_centre(segment))
    index = SegmentedIndex(
        tmp_path / "trained.faiss", [tmp_path / "all.faiss"], [tmp_path / "all.rows"], 8, 300
    )
    assert index.lists == 64 and index.factory == "IVF64_HNSW32,PQ32x4fs"
    lists = faiss_list_sizes(index)
    assert lists.sum() == len(shards) * 1500 and (lists > 0).sum() > 48  # no list left empty by most
    queries = mixture.draw(100, seed=12)
    assert neighbour_recall(index.search(queries, 10)[1], exact_top(queries, shards, 10)) >= 0.9


def faiss_list_sizes(index: SegmentedIndex) -> np.ndarray:
    return np.array([index.codes.invlists.list_size(number) for number in range(index.lists)])


def test_rows_are_read_ahead_where_they_fit_and_asked_for_per_query_where_not(gallery, monkeypatch):
    """Where the rows files fit in memory the index reads them into the page cache at load;
    where not, each query asks for its candidates' pages at once. The answers are the same."""
    import tuwen.ranking.index as ann

    folder, mixture, shards = gallery
    trained, segments, rows = built(folder, shards, len(shards))
    queries = mixture.draw(20, seed=13)
    ahead = SegmentedIndex(trained, segments, rows, nprobe=8, rescored=100)
    assert ahead.prefetching and ahead.rows_resident.wait(timeout=60)
    monkeypatch.setattr(ann, "PREFETCH_SHARE", 0.0)
    asked: list[int] = []
    monkeypatch.setattr(ann.SegmentRows, "will_need_places", lambda self, places: asked.append(len(places)))
    each = SegmentedIndex(trained, segments, rows, nprobe=8, rescored=100)
    assert not each.prefetching
    assert np.array_equal(each.search(queries, 10)[1], ahead.search(queries, 10)[1])
    assert sum(asked) == 20 * 100  # every query's re-scored rows, asked for


def test_populated_rows_are_mapped_in_and_answer_as_before(gallery, tmp_path, monkeypatch):
    """Populating a rows file maps every page of it into the process (a query then takes no
    page fault); where the kernel refuses the advice, the file is read instead. Either way
    the answers are the same."""
    import tuwen.ranking.index as ann

    folder, mixture, shards = gallery
    trained, segments, rows = built(folder, shards, len(shards))
    queries = mixture.draw(20, seed=14)
    write_rows(shards, tmp_path / "own.rows", SegmentRows(rows[0]).centre)  # mapped nowhere yet
    rows_file = SegmentRows(tmp_path / "own.rows")
    own = str(rows_file.path.resolve())
    assert mapped_kb(own.__eq__) < rows_file.path.stat().st_size // 2048
    rows_file.populate()
    assert mapped_kb(own.__eq__) * 1024 >= rows_file.path.stat().st_size - 4096
    populated = SegmentedIndex(trained, segments, rows, nprobe=8, rescored=100)
    assert populated.rows_resident.wait(timeout=60)
    monkeypatch.setattr(ann, "MADV_POPULATE_READ", 12345)  # no such advice: EINVAL
    read = SegmentedIndex(trained, segments, rows, nprobe=8, rescored=100)
    assert read.rows_resident.wait(timeout=60)
    assert np.array_equal(read.search(queries, 10)[1], populated.search(queries, 10)[1])


def test_caption_like_queries_need_more_lists_and_get_them(gallery):
    """Queries shifted from the gallery as captions are from photos (cosine ~0.3 to their
    100 nearest) find fewer of their exact neighbours at the same nprobe; the wider nprobe
    for queries of the other kind brings their recall back."""
    folder, mixture, shards = gallery
    trained, segments, rows = built(folder, shards, len(shards))
    index = SegmentedIndex(trained, segments, rows, nprobe=8, rescored=300)
    texts, _ = mixture.calibrated_text_like(
        100, 3, 0.3, lambda probe: exact_top_scored(probe, shards, 100)[0]
    )
    _, nearest = exact_top_scored(texts, shards, 100)
    nearest_scores = exact_top_scored(texts, shards, 100)[0]
    assert 0.25 < nearest_scores.mean() < 0.35
    exact = nearest[:, :10]
    images = mixture.draw(100, seed=99)
    image_recall = neighbour_recall(index.search(images, 10)[1], exact_top(images, shards, 10))
    text_recall = neighbour_recall(index.search(texts, 10)[1], exact)
    wider = neighbour_recall(index.search(texts, 10, nprobe=32)[1], exact)
    assert text_recall < image_recall and wider >= 0.9 and wider > text_recall


def test_a_grown_index_answers_as_one_built_at_once(gallery, tmp_path):
    """Adding shards adds segments; the old ones are kept, and the answers are a rebuild's."""
    _, mixture, shards = gallery
    (tmp_path / "grown").mkdir()
    trained, before, _ = built(tmp_path / "grown", shards, 6)
    mtimes = {p: p.stat().st_mtime_ns for p in before}
    trained, after, after_rows = built(tmp_path / "grown", shards, 7)
    kept = [p for p in after if p in mtimes]
    assert len(kept) == len(after) - 1 and all(p.stat().st_mtime_ns == mtimes[p] for p in kept)
    (tmp_path / "whole").mkdir()
    whole = build_segment(trained, shards[:7])
    write_index(whole, tmp_path / "whole" / "all.faiss")
    write_rows(shards[:7], tmp_path / "whole" / "all.rows", rows_centre(whole))
    queries = mixture.draw(50, seed=7)
    grown = SegmentedIndex(trained, after, after_rows, nprobe=8, rescored=50).search(queries, 10)
    rebuilt = SegmentedIndex(
        trained, [tmp_path / "whole" / "all.faiss"], [tmp_path / "whole" / "all.rows"], nprobe=8, rescored=50
    ).search(queries, 10)
    assert np.array_equal(grown[1], rebuilt[1]) and np.allclose(grown[0], rebuilt[0], atol=1e-5)


def test_near_copies_keep_their_order(tmp_path):
    """A gallery whose items all lie within cosine 0.9999 of each other (what a random-weight
    model makes of similar photos): stored as differences from the centre, float16 rows still
    tell each item from the rest, so each finds itself first; stored as they are, they do not."""
    mixture = Mixture.spectral(clusters=1, dim=64, noise=0.0015, seed=4)
    shards = write_gallery(mixture, tmp_path / "features", items=600, shard_size=300, tag="t")
    vectors = np.concatenate([read_features(path).embeddings for _, path in shards])
    assert (vectors[:50] @ vectors[50:100].T).min() > 0.999
    trained, segments, rows = built(tmp_path, shards, 2)
    index = SegmentedIndex(trained, segments, rows, nprobe=1, rescored=600)  # every item re-scored
    _, found = index.search(vectors[::10], 1)
    assert list(found[:, 0]) == [row_ids(i // 300, 300)[i % 300] for i in range(0, 600, 10)]
    as_they_are = (
        vectors[::10].astype(np.float16).astype(np.float32) @ vectors.astype(np.float16).astype(np.float32).T
    )
    assert (as_they_are.argmax(axis=1) != np.arange(0, 600, 10)).any()


def test_rows_files_say_what_they_hold(gallery, tmp_path):
    _, _, shards = gallery
    path = tmp_path / "two.rows"
    centre = read_features(shards[0][1]).embeddings.mean(axis=0)
    assert write_rows([shards[2], shards[5]], path, centre) == 3000
    rows = SegmentRows(path)
    assert np.array_equal(rows.centre, centre.astype(np.float32))
    vectors = read_features(shards[5][1]).embeddings
    query = vectors[7]
    ids = np.array([row_ids(5, 1500)[7], row_ids(2, 1500)[0]])
    assert rows.scores(query, ids) == pytest.approx(
        [1.0, read_features(shards[2][1]).embeddings[0] @ query], abs=2e-3
    )
    with pytest.raises(ValueError, match="ordinals must increase"):
        write_rows([shards[5], shards[2]], tmp_path / "back.rows", centre)
    (tmp_path / "not.rows").write_bytes(b"PK\x03\x04 nothing")
    with pytest.raises(ValueError, match="not a rows file"):
        SegmentRows(tmp_path / "not.rows")


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
    write_index(train(sample, lists, "pq4fs"), trained)
    segments, rows = [], []
    for start, size in segment_plan(len(shards), 4):
        segments.append(tmp_path / f"segment-{start}-{size}.faiss")
        rows.append(segments[-1].with_suffix(".rows"))
        segment = build_segment(trained, shards[start : start + size])
        write_index(segment, segments[-1])
        write_rows(shards[start : start + size], rows[-1], rows_centre(segment))
    options = IndexOptions.defaults(nprobe=8, candidates=20)
    drifted = describe(trained, segments, rows, shards, [], options, tmp_path, queries=50)
    fit = drifted["centroid_fit"]
    assert drifted["retrain_due"] and fit["trained"] - fit["since"] > options.retrain_drift
    # The same shards, nothing added since training: nothing to retrain for.
    same = describe(trained, segments[:1], rows[:1], shards[:4], [], options, tmp_path, queries=50)
    assert same["centroid_fit"]["since"] is None and not same["retrain_due"]
    assert planned_training(6, 4, drifted) == 6 and planned_training(6, 4, same) == 4
