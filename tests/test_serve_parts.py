"""The server's parts without a server process: an answer's format, a collection's rows, and a
gallery searched through its index (stale rows never returned, candidates in id order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.synthetic import Mixture, write_gallery
from tuwen.finished.items import STRINGS, ImageFiles, Labels, find_sorted, string_array
from tuwen.finished.reader import Channel
from tuwen.ranking import index as ann
from tuwen.ranking.scoring import FusionRecipe, Hit, Ranking
from tuwen.run.declaration import IMAGES, TEXTS
from tuwen.serve.answers import Query, answer
from tuwen.serve.approximate import GalleryIndex
from tuwen.serve.loading import LoadedCollection, release_freed_memory

CHANNELS = {
    "clip:m": Channel("clip:m", "m", "m-123", Path("card.json"), 64),
    "text:use-m3": Channel("text:use-m3", "use-m3", "use-m3-0123456789ab", Path("s.json"), 0),
}


def test_a_collection_finds_its_rows_by_id():
    collection = LoadedCollection("g", TEXTS, np.array(["a", "b/1", "c"], dtype=object))
    assert [collection.row(i) for i in ("a", "b/1", "c", "bb", "z", "")] == [0, 1, 2, None, None, None]


def test_ids_of_sixteen_bytes_and_more_are_found():
    """Ids are held as numpy strings (16 bytes an id, not a Python object); numpy 2.4's
    searchsorted is wrong on those of 16 bytes or more, so lookups search by comparisons."""
    ids = sorted({f"2024/05/{n:05d}-{'长' * (n % 3)}.jpg" for n in range(3000)} | {"a", ""})
    held = string_array(ids)
    assert held.dtype == STRINGS
    wanted = [ids[0], ids[1], ids[1234], ids[-1], "2024/05/99999.jpg", "zz", "0"]
    assert find_sorted(held, string_array(wanted)).tolist() == [0, 1, 1234, len(ids) - 1, -1, -1, -1]
    collection = LoadedCollection("g", IMAGES, held)
    assert [collection.row(i) for i in (ids[7], "2024/05/00007-.jpg ")] == [7, None]


def test_image_files_and_labels_are_arrays_that_answer_as_a_dict_did(tmp_path):
    ids = string_array(["b.jpg", "a.jpg", "c/d.jpg"])
    files = ImageFiles.of(
        tmp_path, ids, string_array(["x/b.jpg", "/abs/a.jpg", "c/d.jpg"]), string_array(["d2", "d1", "d2"])
    )
    assert files.ids.tolist() == ["a.jpg", "b.jpg", "c/d.jpg"] and len(files) == 3
    assert files.get("b.jpg") == (str(tmp_path / "x/b.jpg"), "d2")
    assert files.get("a.jpg") == ("/abs/a.jpg", "d1")  # a path outside the run stays as it is
    assert files.get("z.jpg") is None and "c/d.jpg" in files and "z" not in files
    assert dict(files.items())["c/d.jpg"] == (str(tmp_path / "c/d.jpg"), "d2")
    assert files.with_digest("d2") == "b.jpg" and files.with_digest("d3") is None  # the first by id
    shared = files.sharing(string_array(["a.jpg", "b.jpg", "c/d.jpg"]))
    assert shared.get("b.jpg") == files.get("b.jpg")
    days = Labels.of(pd.Series(["2024-05-01", "", "2023-01-02", "2024-05-01"]))
    assert len(days) == 4 and days[0] == "2024-05-01" and days.codes.dtype == np.int32
    assert days.where(days.names >= "2024-01-01").tolist() == [True, False, False, True]
    assert days.subset(np.array([False, True, True, False])).where(days.names == "").tolist() == [True, False]
    formats = Labels.of(pd.Series(["PNG", "JPEG"])).at(np.array([1, -1, 0]))
    assert [formats[row] for row in range(3)] == ["JPEG", "", "PNG"]


def test_an_answer_names_what_ranked_how_it_searched_and_each_part():
    gallery = LoadedCollection("photos", IMAGES, np.array(["p1.jpg", "p2.jpg"], dtype=object))
    recipe = FusionRecipe((("clip:m", 1.0), ("ocr", 0.5)), 0.05)
    hits = [Hit(1, 1, 0.7, 0.31, (("clip:m", 0.31), ("ocr", 0.5), ("rerank", -0.11)))]
    query = Query(TEXTS, "红色", {}, known_id="q1", known_in="queries")
    search = {"exact": False, "index": "IVF4,SQ8", "recall@10": 0.97}
    result = answer(
        query, gallery, gallery.ids, Ranking("clip:m", recipe), CHANNELS, hits, search, {"p2.jpg"}, 1.0
    )
    assert (
        result["ranked_by"] == "clip:m+ocr+rerank" and result["exact"] is False and result["search"] == search
    )
    assert result["not_applied"] == ["rerank: the run kept no query bank for re-ranking (rerun its search)"]
    assert result["query"] == {"kind": TEXTS, "text": "红色", "id": "q1", "collection": "queries"}
    (hit,) = result["hits"]
    assert hit == {
        "rank": 1,
        "id": "p2.jpg",
        "score": 0.7,
        "cosine": 0.31,
        "parts": [["clip:m", 0.31], ["ocr", 0.5], ["rerank", -0.11]],
        "image": "/image/photos/p2.jpg",
        "correct": True,
    }
    by_meaning = answer(
        query,
        gallery,
        gallery.ids,
        Ranking("text:use-m3"),
        CHANNELS,
        [Hit(1, 0, 0.5, 0.5, ())],
        search,
        None,
        1.0,
    )
    assert by_meaning["ranked_by"] == "text:use-m3" and by_meaning["hits"][0]["parts"] == [
        ["text:use-m3", 0.5]
    ]
    assert "correct" not in by_meaning["hits"][0]


def test_a_gallery_index_gives_current_rows_as_columns_in_id_order(tmp_path):
    mixture = Mixture.spectral(clusters=20, dim=32, noise=0.05, seed=3)
    shards = write_gallery(mixture, tmp_path / "features", items=400, shard_size=200, tag="t")
    sample, lists = ann.training_sample([p for _, p in shards], None, seed=0)
    ann.write_index(ann.train(sample, lists, "pq4fs"), tmp_path / "trained.faiss")
    segment = ann.build_segment(tmp_path / "trained.faiss", shards)
    ann.write_index(segment, tmp_path / "segment.faiss")
    ann.write_rows(shards, tmp_path / "segment.rows", ann.rows_centre(segment))
    index = ann.SegmentedIndex(
        tmp_path / "trained.faiss", [tmp_path / "segment.faiss"], [tmp_path / "segment.rows"], 100, 100
    )
    # The gallery's columns: its ids sorted; item 5 of shard 1 was superseded (no column).
    ids = sorted(f"item-{n:09d}" for n in range(400) if n != 205)
    position = {item: column for column, item in enumerate(ids)}
    columns = np.array([position.get(f"item-{n:09d}", -1) for n in range(400)])
    first_of = np.array([0, 200])
    described = {"factory": "x", "nprobe": 100, "cross_modal_nprobe": 100}
    gallery = GalleryIndex("clip:m", index, first_of, columns, 30, described)
    from tuwen.files.parquet import read_features

    stale = read_features(shards[1][1]).embeddings[5]
    columns, scores = gallery.search(stale, 10)
    assert len(columns) == 29  # 30 candidates, less the superseded row, which was the nearest
    assert list(columns) == sorted(columns) and len(set(columns)) == len(columns)
    best = columns[np.argmax(scores)]
    assert ids[best] != "item-000000205" and scores.max() < 0.999  # itself is gone
    fresh = read_features(shards[1][1]).embeddings[6]
    columns, scores = gallery.search(fresh, 10)
    assert ids[columns[np.argmax(scores)]] == "item-000000206"


def own_memory_mb() -> float:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["RssAnon"].split()[0]) / 1024


def test_memory_that_loading_freed_goes_back_to_the_system():
    """Arrow's allocator keeps what was freed (a loaded 10M gallery: 2.7 GB of it); the
    server gives it back once loaded."""
    import gc

    import pyarrow as pa
    import pyarrow.compute as pc

    before = own_memory_mb()
    parts = pa.chunked_array(
        [pa.array(np.arange(n, n + 100_000).astype(str)) for n in range(0, 10**7, 10**5)]
    )
    joined = pc.binary_join_element_wise(parts, parts, "-")
    held = own_memory_mb() - before
    assert held > 200
    del parts, joined
    gc.collect()
    release_freed_memory()
    assert own_memory_mb() - before < held / 4
