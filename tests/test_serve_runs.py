"""The server over fused runs and over a run that grows while it serves (workflow runs: slow)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import snakemake
from tests.test_serve import Server
from tuwen.data.demo import ALL_SCENES, draw_scene, generate_demo
from tuwen.files.parquet import read_features
from tuwen.finished.reader import read_finished
from tuwen.run import layout
from tuwen.run.declaration import IMAGES, TEXTS
from tuwen.text.lexical import BM25Index, normalised_by_query
from tuwen.text.ocr import read_ocr_texts

pytestmark = pytest.mark.slow


def stored(run: Path, tag: str, collection: str) -> dict[str, np.ndarray]:
    """A collection's stored embeddings by id: a CLIP model's (by tag) or a text:<encoder> channel's."""
    rows = {}
    folder = (
        layout.sentences_folder(tag.removeprefix("text:"), collection)
        if tag.startswith("text:")
        else layout.features_folder(tag, collection)
    )
    for path in sorted((run / folder).glob("*.parquet")):
        shard = read_features(path)
        rows.update(zip(shard.ids, shard.embeddings, strict=True))
    return rows


def test_a_caption_is_ranked_against_captions_by_meaning(fusion_run):
    """by=text:use-m3: the sentence encoder's cosine of the typed caption with each stored caption."""
    from tuwen.text.sentences import load_sentence_encoder

    captions = pd.read_parquet(fusion_run / layout.manifest("i2t_gallery", TEXTS))
    gallery = stored(fusion_run, "text:use-m3", "i2t_gallery")
    ids = sorted(gallery)
    query = load_sentence_encoder("use-m3").encode(["一个红色的圆形在左边"])[0].astype(np.float64)
    cosines = {i: float(gallery[i].astype(np.float64) @ query) for i in ids}
    expected = sorted(ids, key=lambda i: (-round(cosines[i], 5), i))[:5]
    server = Server(fusion_run)
    try:
        status, answer = server.get(
            "/api/search", q="一个红色的圆形在左边", gallery="i2t_gallery", by="text:use-m3", k=5
        )
        assert status == 200, answer
        assert answer["ranked_by"] == "text:use-m3" and [h["id"] for h in answer["hits"]][:3] == expected[:3]
        for hit in answer["hits"]:
            assert hit["score"] == pytest.approx(cosines[hit["id"]], abs=1e-5)
            assert hit["parts"] == [["text:use-m3", pytest.approx(hit["score"], abs=1e-6)]]
            assert hit["caption"] == captions.set_index("text_id").loc[hit["id"], "caption"]
        status, galleries = server.get("/api/galleries")
        assert "text:use-m3" in next(g for g in galleries["galleries"] if g["name"] == "i2t_gallery")["by"]
        status, refused = server.get("/api/search", q="猫", gallery="i2t_gallery", by="text:nope")
        assert status == 400 and "cannot be ranked by 'text:nope'" in refused["error"]
    finally:
        server.stop()
    # The one-shot search ranks the same way.
    import subprocess
    import sys

    printed = subprocess.run(
        [sys.executable, "-m", "tuwen", "search", "一个红色的圆形在左边", "--run", str(fusion_run)]
        + ["--gallery", "i2t_gallery", "--by", "text:use-m3", "--top", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert printed.returncode == 0, printed.stderr
    assert [line.split("\t")[3] for line in printed.stdout.splitlines()] == expected[:3]


def test_fused_run_scores_a_new_query_by_the_parts_that_apply(fusion_run):
    chosen = json.loads((fusion_run / layout.fusion("chosen.json")).read_text(encoding="utf-8"))["t2i"]
    weights = {name: w for name, w in chosen["weights"].items() if w}
    tag_of = {name: channel.tag for name, channel in read_finished(fusion_run).channels.items()}
    tag_of["text:use-m3"] = "text:use-m3"
    queries = pd.read_parquet(fusion_run / layout.manifest("t2i_queries", TEXTS))
    gallery_ids = sorted(pd.read_parquet(fusion_run / layout.assignment("t2i_gallery"))["id"])
    ocr_texts = read_ocr_texts(
        sorted((fusion_run / "results/ocr/t2i_gallery").glob("*.parquet")),
        pd.read_parquet(fusion_run / layout.assignment("t2i_gallery")),
    )
    server = Server(fusion_run)
    try:
        for text_id, caption in queries[["text_id", "caption"]].head(4).itertuples(index=False):
            status, answer = server.get("/api/search", q=caption, k=10)
            assert status == 200, answer
            assert answer["ranked_by"] == "+".join([*weights, *(["rerank"] if chosen["temperature"] else [])])
            assert answer["not_applied"] == [] and answer["exact"] is True
            # The same score from the run's own files: each channel's stored embeddings
            # (the query's too: typed again, the caption encodes to the same vector).
            total = np.zeros(len(gallery_ids))
            for channel, weight in weights.items():
                if channel == "ocr":
                    index = BM25Index([ocr_texts.get(g, "") for g in gallery_ids])
                    total += weight * normalised_by_query(index.scores([caption])).toarray()[0]
                    continue
                query = stored(fusion_run, tag_of[channel], "t2i_queries")[text_id].astype(np.float64)
                gallery = stored(fusion_run, tag_of[channel], "t2i_gallery")
                total += weight * np.array([gallery[g].astype(np.float64) @ query for g in gallery_ids])
            if not chosen["temperature"]:
                order = sorted(range(len(gallery_ids)), key=lambda i: (-round(total[i], 5), gallery_ids[i]))
                assert [h["id"] for h in answer["hits"]][:3] == [gallery_ids[i] for i in order[:3]]
            for hit in answer["hits"]:
                fused = sum(v for name, v in hit["parts"] if name != "rerank")
                assert fused == pytest.approx(total[gallery_ids.index(hit["id"])], abs=1e-5)
                assert hit["score"] == pytest.approx(sum(v for _, v in hit["parts"]), abs=1e-5)
                assert [name for name, _ in hit["parts"] if name != "rerank"] == list(weights)
        # An uploaded image is scored by the image → text choice (its text read by OCR when
        # the choice uses it), ranked by the fused score.
        i2t = json.loads((fusion_run / layout.fusion("chosen.json")).read_text(encoding="utf-8"))["i2t"]
        images = pd.read_parquet(fusion_run / layout.manifest("i2t_images", IMAGES))
        path = images[images["status"] == "ok"]["path"].iloc[0]
        body = (fusion_run / path).read_bytes()
        status, answer = server.call("POST", "/api/search?k=10", body, {"Content-Type": "image/jpeg"})
        assert status == 200, answer
        used = [name for name, w in i2t["weights"].items() if w]
        assert answer["ranked_by"] == "+".join([*used, *(["rerank"] if i2t["temperature"] else [])])
        scores = [hit["score"] for hit in answer["hits"]]
        assert scores == sorted(scores, reverse=True)
        for hit in answer["hits"]:
            assert hit["score"] == pytest.approx(sum(v for _, v in hit["parts"]), abs=1e-5)
    finally:
        server.stop()


def test_table_server_and_cli_give_a_re_ranked_runs_own_queries_the_same_top_5(fusion_run, tmp_path):
    """One ranking everywhere: with re-ranking chosen (set here in a copy of the fused run, its
    tables then rerun), each of the run's own queries gets the table's top 5 from the server
    and from the CLI, scores and parts included."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import FUSION_DEMO, snakemake

    run = tmp_path / "reranked"
    shutil.copytree(fusion_run, run, symlinks=True)
    chosen_path = run / layout.fusion("chosen.json")
    chosen = json.loads(chosen_path.read_text(encoding="utf-8"))
    for recipe in chosen.values():
        recipe["temperature"] = recipe["temperature"] or 0.05
    chosen_path.write_text(json.dumps(chosen), encoding="utf-8")
    snakemake(run, config=FUSION_DEMO)
    bank = pd.read_parquet(run / layout.query_bank("t2i"))
    assert len(bank) == len(pd.read_parquet(run / layout.assignment("t2i_gallery")))

    def table_top5(task: str, query_id: str) -> pd.DataFrame:
        topk = pd.read_parquet(run / layout.topk(task))
        return topk[topk["query_id"] == query_id].sort_values("rank").head(5)

    def cli_top5(*args: str) -> list[list[str]]:
        printed = subprocess.run(
            [sys.executable, "-m", "tuwen", "search", *args, "--run", str(run), "--top", "5"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert printed.returncode == 0, printed.stderr
        assert "by " + "+".join([*weights, "rerank"]) in printed.stderr
        return [line.split("\t") for line in printed.stdout.splitlines()]

    queries = pd.read_parquet(run / layout.manifest("t2i_queries", TEXTS))
    queries = queries[queries["status"] == "ok"]
    images = pd.read_parquet(run / layout.manifest("i2t_images", IMAGES))
    images = images[images["status"] == "ok"].drop_duplicates("image_id")
    server = Server(run)
    try:
        weights = [name for name, w in chosen["t2i"]["weights"].items() if w]
        for text_id, caption in queries[["text_id", "caption"]].head(4).itertuples(index=False):
            expected = table_top5("t2i", text_id)
            status, answer = server.get("/api/search", q=caption, k=5)
            assert status == 200, answer
            assert answer["ranked_by"].endswith("+rerank") and answer["not_applied"] == []
            assert [h["id"] for h in answer["hits"]] == list(expected["target_id"])
            assert [h["score"] for h in answer["hits"]] == pytest.approx(list(expected["score"]), abs=1e-6)
            assert [h["parts"][-1][0] for h in answer["hits"]] == ["rerank"] * 5
            printed = cli_top5(caption)
            assert [line[3] for line in printed] == list(expected["target_id"])
            assert [float(line[1]) for line in printed] == pytest.approx(list(expected["score"]), abs=1e-5)
        weights = [name for name, w in chosen["i2t"]["weights"].items() if w]
        for image_id, path in images[["image_id", "path"]].head(3).itertuples(index=False):
            expected = table_top5("i2t", image_id)
            body = (run / path).read_bytes()
            status, answer = server.call("POST", "/api/search?k=5", body, {"Content-Type": "image/jpeg"})
            assert status == 200, answer
            assert answer["query"]["id"] == image_id
            assert [h["id"] for h in answer["hits"]] == list(expected["target_id"])
            assert [h["score"] for h in answer["hits"]] == pytest.approx(list(expected["score"]), abs=1e-5)
            assert [line[3] for line in cli_top5("--image", str(run / path))] == list(expected["target_id"])
    finally:
        server.stop()
    # Through an index (every gallery indexed): its candidates are all 40 items here, scored
    # exactly from the held embeddings, so the answers are still the table's.
    snakemake(run, config={**FUSION_DEMO, "index": {"min_items": 0}})
    from tuwen.serve.loaded_run import LoadedRun

    index = LoadedRun.open(run)
    assert set(index.approximate) == {"t2i_gallery", "i2t_gallery"}
    # The index stage measured its recall on the task's own captions too, with their nprobe.
    described = json.loads((run / "results/index/t2i_gallery/index.json").read_text())["index"]
    cross = described["cross_modal"]
    assert cross["source"] == "the task's queries" and cross["nprobe"] == described["cross_modal_nprobe"]
    assert cross["queries"] > 0 and 0 <= cross["recall@10"] <= 1
    for text_id, caption in queries[["text_id", "caption"]].head(2).itertuples(index=False):
        answer = index.search(index.text_query(caption, "t2i_gallery"), "t2i_gallery", 5)
        assert answer["exact"] is False and answer["search"]["index"].startswith("IVF")
        assert answer["search"]["recall_measured_on"] == "the task's queries"
        expected = table_top5("t2i", text_id)
        assert [h["id"] for h in answer["hits"]] == list(expected["target_id"])
        assert [h["score"] for h in answer["hits"]] == pytest.approx(list(expected["score"]), abs=1e-6)


def test_the_server_answers_from_shards_an_incremental_run_adds(tmp_path):
    data = tmp_path / "contest"
    generate_demo(data, train_pairs=20, queries=10, seed=0)
    config = {"data_root": str(data), "shards": {"size": 8, "text_size": 64}, "train": {"enabled": False}}
    run = tmp_path / "run"
    snakemake(run, config=config)
    server = Server(run)
    try:
        before = {g["name"]: g["items"] for g in server.get("/api/galleries")[1]["galleries"]}
        added = [f"Image14009999-{i:04d}.jpg" for i in range(3)]
        for i, name in enumerate(added):
            draw_scene(ALL_SCENES[i], random.Random(100 + i)).save(
                data / "附件2/ImageData" / name, format="JPEG"
            )
        snakemake(run, config=config)
        deadline = time.time() + 60
        while time.time() < deadline:
            galleries = {g["name"]: g["items"] for g in server.get("/api/galleries")[1]["galleries"]}
            if galleries["t2i_gallery"] == before["t2i_gallery"] + 3:
                break
            time.sleep(1)
        assert galleries["t2i_gallery"] == before["t2i_gallery"] + 3
        status, answer = server.get("/api/search", like=added[1], of="t2i_gallery", k=3)
        assert status == 200 and answer["hits"][0]["id"] == added[1]
        assert server.process.poll() is None
    finally:
        server.stop()


def test_the_server_answers_8_clients_through_a_rerun_from_complete_states_only(tmp_path):
    """Photos added and removed, the run rerun while 8 clients query: every answer comes from
    one complete state of the run (the old one until the rerun has finished, then the new
    one), none is an error, no removed photo is answered after the reload, and the new ones
    are found."""
    import threading

    from tests.test_workflow_own_data import example, make_library

    library = tmp_path / "library"
    made = make_library(library, 40)
    # Duplicates and zero-shot tags in the run too: they reload with it.
    (library / "labels.txt").write_text("红色\n蓝色\n圆形\n方形\n", encoding="utf-8")
    config = example("tags", data_root=str(library), tags={"labels": "labels.txt", "templates": ["一个{}"]})
    run = tmp_path / "run"
    snakemake(run, config=config)
    before = {relative for relative, _ in made}
    removed = sorted(before)[:3]
    server = Server(run)
    answers: list[tuple[int, float, frozenset[str]]] = []
    stop = threading.Event()

    def client(number: int) -> None:
        # A date filter every photo passes (each is dated by its file's time, today): the
        # filtered answers list every photo of a state as the others do.
        queries = [
            {"q": "一个红色的圆形"},
            {"q": "蓝色的方形", "after": "2000-01-01"},
            {"like": sorted(before)[-1], "of": "photos"},
        ]
        turn = number
        while not stop.is_set():
            status, answer = server.get("/api/search", gallery="photos", k=60, **queries[turn % len(queries)])
            turn += 1
            ids = frozenset(hit["id"] for hit in answer.get("hits", []))
            answers.append((status, answer.get("loaded_at", 0.0), ids))

    clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    try:
        for thread in clients:
            thread.start()
        time.sleep(3)
        added = make_library(library, 10, start=100, folder="2025/new")
        for relative in removed:
            (library / relative).unlink()
        after = (before - set(removed)) | {relative for relative, _ in added}
        snakemake(run, config=config)
        deadline = time.time() + 120
        while time.time() < deadline and not any(ids == after for _, _, ids in answers[-20:]):
            time.sleep(0.5)
        time.sleep(3)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=120)
        server.stop()
    assert len(answers) > 200
    assert [status for status, _, _ in answers if status != 200] == []
    # Each answer lists every photo of one state (k covers them all): the old or the new.
    assert {ids for _, _, ids in answers} == {frozenset(before), frozenset(after)}
    reloaded = min(loaded_at for _, loaded_at, ids in answers if ids == after)
    assert all(ids == after for _, loaded_at, ids in answers if loaded_at >= reloaded)
    assert sum(1 for _, loaded_at, _ in answers if loaded_at >= reloaded) > 20
