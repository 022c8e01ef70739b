"""A finished run's galleries in a real vector database (Milvus Lite, the same client code as a
Milvus cluster) and in clip-retrieval's layout; the server answering from Milvus."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import pytest

from tuwen.export.clip_retrieval import export_clip_retrieval
from tuwen.export.milvus import export_milvus, milvus_client
from tuwen.files.parquet import read_features
from tuwen.run import layout
from tuwen.run.declaration import TEXTS


def current_embeddings(run, tag_of_gallery: str, gallery: str) -> dict[str, np.ndarray]:
    rows = {}
    for path in sorted((run / "results/features").glob(f"*/{gallery}/*.parquet")):
        shard = read_features(path)
        if shard.metadata["model_tag"] == tag_of_gallery:
            rows.update(zip(shard.ids, shard.embeddings, strict=True))
    return rows


@pytest.fixture(scope="module")
def milvus(demo_run, tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("milvus") / "gallery.db")
    return uri, export_milvus(demo_run, uri)


def test_galleries_are_exported_with_their_model_and_again_only_what_is_new(demo_run, milvus):
    uri, done = milvus
    assert [d["gallery"] for d in done] == ["t2i_gallery", "i2t_gallery"]
    client = milvus_client(uri)
    for item in done:
        current = pd.read_parquet(demo_run / layout.assignment(item["gallery"]))
        assert item["added"] == item["held"] == len(current)
        properties = client.describe_collection(item["collection"])["properties"]
        assert properties["tuwen.model_tag"] == item["model_tag"]
    # The stored vector and caption of an item are the run's.
    tag = done[1]["model_tag"]
    stored = current_embeddings(demo_run, tag, "i2t_gallery")
    some = sorted(stored)[3]
    row = client.get(done[1]["collection"], ids=[some], output_fields=["vector", "text"])[0]
    assert np.allclose(row["vector"], stored[some], atol=1e-7)
    captions = pd.read_parquet(demo_run / layout.manifest("i2t_gallery", TEXTS)).set_index("text_id")
    assert row["text"] == captions.loc[some, "caption"]
    again = export_milvus(demo_run, uri)
    assert [d["added"] for d in again] == [0, 0] and [d["held"] for d in again] == [d["held"] for d in done]


def test_the_server_answers_from_milvus_as_it_answers_exactly(demo_run, milvus):
    """Milvus Lite searches exactly here (a small gallery): the same top 5 as the exact search."""
    from tuwen.serve.loaded_run import LoadedRun

    uri, _ = milvus
    exact, served = LoadedRun.open(demo_run), LoadedRun.open(demo_run, milvus=uri)
    assert "t2i_gallery" in served.approximate and not exact.approximate
    queries = pd.read_parquet(demo_run / layout.manifest("t2i_queries", TEXTS))
    for caption in queries["caption"].head(3):
        expected = exact.search(exact.text_query(caption, "t2i_gallery"), "t2i_gallery", 5)
        answer = served.search(served.text_query(caption, "t2i_gallery"), "t2i_gallery", 5)
        assert answer["exact"] is False and answer["search"]["index"].startswith("Milvus Lite")
        assert [h["id"] for h in answer["hits"]] == [h["id"] for h in expected["hits"]]
        assert [h["score"] for h in answer["hits"]] == pytest.approx(
            [h["score"] for h in expected["hits"]], abs=1e-5
        )
    # "More like this" on a gallery kept in Milvus: the item's vector comes from its shard.
    first = exact.collections["t2i_gallery"].ids[0]
    like = served.search(served.item_query("t2i_gallery", first), "t2i_gallery", 3)
    assert like["hits"][0]["id"] == first and like["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_clip_retrievals_layout_holds_the_features_row_for_row(demo_run, tmp_path):
    done = export_clip_retrieval(demo_run, tmp_path)
    images = next(d for d in done if d["gallery"] == "t2i_gallery")
    stored = current_embeddings(demo_run, images["model_tag"], "t2i_gallery")
    parts = sorted((tmp_path / "t2i_gallery" / "img_emb").glob("img_emb_*.npy"))
    metadata = sorted((tmp_path / "t2i_gallery" / "metadata").glob("metadata_*.parquet"))
    assert [p.stem.split("_")[-1] for p in parts] == [m.stem.split("_")[-1] for m in metadata]
    vectors = np.concatenate([np.load(p) for p in parts])
    table = pd.concat([pd.read_parquet(m) for m in metadata], ignore_index=True)
    assert vectors.dtype == np.float16 and len(vectors) == len(table) == images["rows"] == len(stored)
    assert list(table.columns) == ["image_path", "id", "model_tag"]
    for i in (0, len(table) - 1):
        assert np.allclose(vectors[i], stored[table["id"][i]], atol=1e-3)
        assert table["image_path"][i].endswith(table["id"][i])
    # What autofaiss does with the folder: a faiss index of the npy parts, rows in metadata order,
    # whose hits are the metadata rows of the nearest stored embeddings.
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors.astype(np.float32))
    query = stored[table["id"][5]]
    best = int(index.search(query[None, :].astype(np.float32), 1)[1][0, 0])
    ids = list(table["id"])
    assert best == int(np.argmax([stored[i].astype(np.float16).astype(np.float32) @ query for i in ids]))
    texts = next(d for d in done if d["gallery"] == "i2t_gallery")
    captions = pd.read_parquet(next((tmp_path / "i2t_gallery" / "metadata").glob("*.parquet")))
    assert (tmp_path / "i2t_gallery" / "text_emb").is_dir() and "caption" in captions and texts["rows"] > 0
