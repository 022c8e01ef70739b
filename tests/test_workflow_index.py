"""The index stage on a photo library: built from the feature shards, recall measured against
exact search, served (answers say they are approximate), and grown by one segment when
photos are added (workflow runs: slow)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import snakemake
from tests.test_workflow_own_data import example, make_library
from tuwen.run import layout

pytestmark = pytest.mark.slow

# Shards of 4 photos, so that a small library has several; segments of 1, 2, 4, ... shards.
INDEXED = {"index": {"min_items": 0, "segment_base": 2, "candidates": 10}, "shards": {"size": 4}}


@pytest.fixture(scope="module")
def indexed_run(tmp_path_factory):
    library = tmp_path_factory.mktemp("indexed-library")
    make_library(library, 20)
    run = tmp_path_factory.mktemp("indexed")
    config = example("photos", data_root=str(library), **INDEXED)
    snakemake(run, config=config)
    return run, library, config


def test_the_index_is_built_measured_and_served(indexed_run):
    run, _, _ = indexed_run
    described = json.loads((run / layout.served_index("photos")).read_text(encoding="utf-8"))
    index = described["index"]
    assert described["items"] == index["items"] == 20
    # 5 shards: trained on the first 4 (growth 4), segments of 4 and 1 shards (base 2).
    assert index["trained_on_shards"] == 4 and index["retrain_at_shards"] == 16
    assert [s.rsplit("/", 1)[1] for s in index["segments"]] == ["segment-0-4.faiss", "segment-4-1.faiss"]
    assert index["recall_query_source"] == "gallery items" and index["recall@10"] >= 0.9
    from tuwen.serve.loaded_run import LoadedRun

    served = LoadedRun.open(run)
    assert "photos" in served.approximate
    exact = served.collections["photos"]
    assert "clip:tuwen-tiny-rn" not in exact.embeddings  # the index searches: nothing held
    answer = served.search(served.text_query("一个红色的圆形", "photos"), "photos", 5)
    assert answer["exact"] is False and answer["search"]["recall@10"] == index["recall@10"]
    assert len(answer["hits"]) == 5 and all(h["score"] == h["cosine"] for h in answer["hits"])
    # Every item is a candidate here (one list, 300 re-scored): the answer is exact search's
    # and its scores the cosines, up to the float16 rows' rounding (the random-initialised
    # model puts every photo within cosine 0.9999 of the others: near ties, 1e-5 apart).

    from tuwen.files.parquet import read_features

    query = served.text_query("一个红色的圆形", "photos").vectors["clip:tuwen-tiny-rn"]
    shards = [read_features(run / path) for _, path in index["shards_indexed"]]
    cosines = {
        i: float(v @ query) for shard in shards for i, v in zip(shard.ids, shard.embeddings, strict=True)
    }
    found = [h["id"] for h in answer["hits"]]
    assert all(cosines[a] >= cosines[b] - 1e-5 for a, b in zip(found, found[1:], strict=False))
    assert all(cosines[i] <= cosines[found[-1]] + 1e-5 for i in cosines if i not in found)
    assert [h["score"] for h in answer["hits"]] == pytest.approx([cosines[i] for i in found], abs=1e-5)
    assert answer["search"]["rescored"] == 300 and answer["search"]["nprobe"] == index["cross_modal_nprobe"]
    first = exact.ids[7]
    like = served.search(served.item_query("photos", first), "photos", 3)
    assert like["hits"][0]["id"] == first and like["hits"][0]["score"] == pytest.approx(1.0, abs=0.01)
    gallery = next(g for g in served.galleries() if g["name"] == "photos")
    assert gallery["search"]["exact"] is False and "clip:tuwen-tiny-rn" in gallery["by"]


def test_new_photos_add_one_segment_and_train_nothing(indexed_run):
    run, library, config = indexed_run
    folder = run / "results/index/photos"
    files = ("*.faiss", "*.rows")
    before = {p.relative_to(folder): p.stat().st_mtime_ns for f in files for p in folder.rglob(f)}
    make_library(library, 4, start=100, folder="new")
    snakemake(run, config=config)
    after = {p.relative_to(folder): p.stat().st_mtime_ns for f in files for p in folder.rglob(f)}
    written = sorted(str(p) for p in after if before.get(p) != after[p])
    # One segment's codes and rows: not trained again.
    assert [w.rsplit("/", 1)[1] for w in written] == ["segment-4-2.faiss", "segment-4-2.rows"]
    described = json.loads((run / layout.served_index("photos")).read_text(encoding="utf-8"))
    assert described["index"]["items"] == 24
    assert [s.rsplit("/", 1)[1] for s in described["index"]["segments"]] == [
        "segment-0-4.faiss",
        "segment-4-2.faiss",
    ]
    from tuwen.serve.loaded_run import LoadedRun

    served = LoadedRun.open(run)
    new = next(i for i in served.collections["photos"].ids if i.startswith("new/"))
    assert served.search(served.item_query("photos", new), "photos", 1)["hits"][0]["id"] == new
