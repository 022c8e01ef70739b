"""Zero-shot tags: labels files, prompts, each photo's best labels, and the tag filter."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tuwen.ranking.tags import (
    LabelsError,
    label_embeddings,
    prompt_templates,
    read_labels,
    read_tags,
    tag_table,
)


def test_a_labels_file_is_a_label_a_line_or_a_table(tmp_path):
    lines = tmp_path / "labels.txt"
    lines.write_text("\ufeff# 家里的照片\n猫\n\n 狗 \n海边\n", encoding="utf-8")
    assert read_labels(lines) == ["猫", "狗", "海边"]
    table = tmp_path / "labels.csv"
    table.write_text("label,note\n猫,cat\n狗,dog\n", encoding="utf-8")
    assert read_labels(table) == ["猫", "狗"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("labels.txt", "猫\n狗\n猫\n", r"labels.txt, line 3: label '猫' repeats line 1"),
        ("labels.txt", "# nothing\n\n", r"labels.txt: no labels"),
        ("labels.txt", "猫\n" + "很" * 41 + "\n", r"labels.txt, line 2: the label has 41 characters"),
        ("labels.csv", "label,note\n猫,a\n,b\n", r"labels.csv, row 2: the label is empty"),
        ("labels.csv", "name\n猫\n", r"labels.csv: missing required column\(s\) label"),
    ],
)
def test_a_bad_labels_file_names_its_row(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(Exception, match=message):
        read_labels(path)


def test_a_missing_labels_file_names_the_setting(tmp_path):
    with pytest.raises(LabelsError, match=r"nope.txt: labels file does not exist \(tags.labels\)"):
        read_labels(tmp_path / "nope.txt")


def test_prompts_are_cn_clips_own_or_the_configured_ones():
    from cn_clip.eval.imagenet_zeroshot_templates import openai_imagenet_template

    own = prompt_templates("cn_clip")
    assert len(own) == len(openai_imagenet_template) and all(t.count("{}") == 1 for t in own)
    assert own[0].format("猫") == openai_imagenet_template[0]("猫")
    assert prompt_templates(["一张{}的照片"]) == ["一张{}的照片"]
    with pytest.raises(LabelsError, match=r"template 2 \('照片'\): must hold \{\} once"):
        prompt_templates(["一张{}的照片", "照片"])


def test_each_photo_gets_its_best_labels_as_cn_clips_zero_shot_classifier_ranks_them():
    # Prompts embedded on two axes per label: the label's embedding is their normalised mean.
    axes = {"猫": np.eye(4)[0], "狗": np.eye(4)[1], "海边": np.eye(4)[2]}
    templates = ["一张{}的照片", "{}"]

    def encode(prompts):
        return np.stack(
            [axes[p.replace("一张", "").replace("的照片", "")] * (2 if "照片" in p else 1) for p in prompts]
        )

    classifier = label_embeddings(encode, list(axes), templates)
    assert np.allclose(classifier, np.eye(4)[:3])
    photos = np.array([[0.9, 0.1, 0.0, 0.3], [0.0, 0.2, 0.8, 0.0], [0.5, 0.5, 0.0, 0.0]])
    table = tag_table(["a", "b", "c"], photos, classifier, list(axes), 100.0, 2)
    assert list(table.columns) == ["id", "rank", "label", "score", "cosine"]
    best = table.groupby("id")["label"].apply(list).to_dict()
    assert best == {"a": ["猫", "狗"], "b": ["海边", "狗"], "c": ["猫", "狗"]}  # c: a tie, by label order
    cosines = photos / np.linalg.norm(photos, axis=1, keepdims=True) @ classifier.T
    probabilities = np.exp(100 * cosines) / np.exp(100 * cosines).sum(axis=1, keepdims=True)
    first = table[table["rank"] == 1].set_index("id")
    assert first.loc["a", "score"] == pytest.approx(probabilities[0, 0], abs=1e-6)
    assert first.loc["b", "cosine"] == pytest.approx(cosines[1, 2], abs=1e-6)


# ---- the run's tags (the demo run tags its photos by shape and colour) ---------------------


def test_the_runs_tags_are_its_model_s_zero_shot_labels(demo_run):
    """Every current photo of each image collection has its best 3 labels, and they are what
    the run's model gives: its text tower (torch) on the prompts, its features of the photos."""
    import torch

    from tuwen.clip.cards import ModelCard
    from tuwen.clip.encode import tokenize_captions
    from tuwen.clip.models import load_model
    from tuwen.ranking.channels import embeddings_by_id

    labels = read_labels(demo_run / "results/demo/data/labels.txt")
    card = ModelCard.read(demo_run / "results/models/tuwen-tiny-rn/finetune/model.json")
    model = load_model(card.arch, card.checkpoint_in(demo_run))

    def encode(prompts):
        with torch.inference_mode():
            return model.encode_text(tokenize_captions(prompts)).numpy()

    classifier = label_embeddings(encode, labels, ["一张{}的照片", "{}"])
    for collection in ("t2i_gallery", "i2t_images"):
        table = pd.read_csv(demo_run / f"results/tags/{collection}.csv", dtype={"id": str})
        shards = sorted((demo_run / "results/features" / card.tag / collection).glob("*.parquet"))
        by_id, scale = embeddings_by_id(
            [str(s) for s in shards], str(demo_run / f"results/shards/{collection}/assignment.parquet")
        )
        assert set(table["id"]) == set(by_id) and table.groupby("id").size().eq(3).all()
        ids = sorted(by_id)
        expected = tag_table(ids, np.stack([by_id[i] for i in ids]), classifier, labels, scale, 3)
        assert np.allclose(table["score"], expected["score"], atol=1e-4)
        assert np.allclose(table["cosine"], expected["cosine"], atol=1e-4)


def test_the_server_and_cli_filter_by_tag_before_ranking(demo_run):
    from tuwen.serve.loaded_run import Filters, LoadedRun, QueryError

    loaded = LoadedRun.open(demo_run)
    gallery = loaded.gallery("t2i_gallery")
    tags = read_tags(demo_run / "results/tags/t2i_gallery.csv")
    label = pd.read_csv(demo_run / "results/tags/t2i_gallery.csv")["label"].value_counts().index[-1]
    tagged = {item for item, labels in tags.items() if label in labels}
    query = loaded.text_query("左上角有一个红色的圆形", "t2i_gallery")
    everything = loaded.search(query, "t2i_gallery", len(gallery.ids))
    filtered = loaded.search(query, "t2i_gallery", 10, filters=Filters(tag=label))
    # Exactly the tagged photos, in the order (and with the scores) the whole gallery ranks them.
    expected = [hit for hit in everything["hits"] if hit["id"] in tagged][:10]
    assert [h["id"] for h in filtered["hits"]] == [h["id"] for h in expected]
    assert [h["score"] for h in filtered["hits"]] == [h["score"] for h in expected]
    assert filtered["filter"] == {"tag": label, "matching": len(tagged), "fewer_than_k": len(tagged) < 10}
    with pytest.raises(QueryError, match=r"no photo of t2i_gallery is tagged '不存在' \(tags: "):
        loaded.search(query, "t2i_gallery", 10, filters=Filters(tag="不存在"))
    with pytest.raises(QueryError, match="i2t_gallery has no tags"):
        loaded.search(loaded.text_query("猫", "i2t_gallery"), "i2t_gallery", 10, filters=Filters(tag=label))
    json.dumps(filtered)  # the answer is JSON-ready
