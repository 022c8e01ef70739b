"""The declared run: presets, the user's collections, tasks and training, and one-line errors."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO, config_with
from tuwen.run.declaration import IMAGES, TEXTS, DeclarationError, Run, declare_run, declared_models


def config(**keys) -> dict:
    return config_with({"data_root": "demo", **keys})


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "library"
    (root / "2024/05").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "2024/05/a.jpg")
    pd.DataFrame({"qid": ["q1", "q2"], "query": ["红色的花", "一只猫"]}).to_csv(
        root / "queries.csv", index=False
    )
    pd.DataFrame({"path": ["2024/05/a.jpg"], "text": ["花"]}).to_csv(
        root / "pairs.tsv", sep="\t", index=False
    )
    return root


def test_the_contest_preset_is_the_contest_layout():
    run = declare_run(config())
    assert run.demo and set(run.tasks) == {"t2i", "i2t"}
    t2i, i2t = run.tasks["t2i"], run.tasks["i2t"]
    assert (t2i.queries, t2i.gallery, t2i.table, t2i.k) == ("t2i_queries", "t2i_gallery", "result1.csv", 5)
    assert t2i.columns == ("text_id", "similarity_ranking", "result_image_id")
    assert i2t.columns == ("image_id", "similarity_ranking", "result_text_id")
    assert i2t.query_list.file.endswith("附件3/image_test.csv") and t2i.query_list is None
    assert (t2i.image_side, t2i.text_side, i2t.image_side, i2t.text_side) == (
        "t2i_gallery",
        "t2i_queries",
        "i2t_images",
        "i2t_gallery",
    )
    assert run.trains and run.collections["train_texts"].pairs_with == "train_images"
    assert {run.collections[n].kind for n in ("val_images", "val_texts")} == {IMAGES, TEXTS}
    assert t2i.ground_truth.query_column == "text_id" and i2t.ground_truth.query_column == "image_id"


def test_a_photo_folder_alone_is_a_run(photos):
    run = declare_run(config(data_root=str(photos), preset="none", collections={"photos": {"images": "."}}))
    assert run.tasks == {} and not run.trains and run.searchable() == ["photos"]
    assert run.collections["photos"].source == str(photos)


def test_own_queries_tasks_and_training(photos):
    run = declare_run(
        config(
            data_root=str(photos),
            preset="none",
            collections={
                "photos": {"images": "."},
                "questions": {"texts": "queries.csv", "id_column": "qid", "caption_column": "query"},
            },
            tasks={
                "find": {
                    "queries": "questions",
                    "gallery": "photos",
                    "k": 20,
                    "table": "find.csv",
                    "columns": ["问题", "名次", "图片"],
                }
            },
            training={"pairs": "pairs.tsv", "images": ".", "image_column": "path", "caption_column": "text"},
        )
    )
    find = run.tasks["find"]
    assert (find.k, find.table, find.columns, find.direction) == (
        20,
        "find.csv",
        ("问题", "名次", "图片"),
        "t2i",
    )
    pairs = run.collections["train_texts"]
    assert (pairs.id_column, pairs.caption_column, pairs.pairs_with) == ("path", "text", "train_images")
    assert Run.from_dict(run.to_dict()) == run


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"collections": {"photos": {"images": "nowhere"}}}, "collections.photos.images: .* is not a folder"),
        ({"collections": {"empty": {"images": "empty"}}}, "collections.empty.images: .* holds no image file"),
        ({"collections": {"q": {"texts": "queries.csv"}}}, "collections.q.texts: .* has no column 'text_id'"),
        ({"collections": {"q": {"texts": "queries.xlsx"}}}, "collections.q.texts: .* not a CSV, TSV"),
        ({"collections": {"a b": {"images": "."}}}, "may use only letters"),
        ({"collections": {"p": {"images": ".", "texts": "queries.csv"}}}, "give either images"),
        (
            {"tasks": {"t": {"queries": "nope", "gallery": "photos"}}},
            r"tasks.t.queries: 'nope' is not a declared",
        ),
        ({"tasks": {"t": {"queries": "photos", "gallery": "photos"}}}, "both hold images"),
        ({"tasks": {"t": {"queries": "photos", "gallery": "photos2"}}}, "photos2"),
        ({"training": {"pairs": "pairs.tsv", "images": "."}}, "training.pairs: .* has no column 'image_id'"),
        (
            {
                "training": {
                    "pairs": "pairs.tsv",
                    "images": ".",
                    "image_column": "path",
                    "caption_column": "text",
                    "validation_pairs": "pairs.tsv",
                    "validation_images": "nowhere",
                }
            },
            "training.validation_images: .* is not a folder",
        ),
        (
            {
                "training": {
                    "pairs": "pairs.tsv",
                    "images": ".",
                    "image_column": "path",
                    "caption_column": "text",
                    "validation_images": ".",
                }
            },
            "training.validation_images is set but training.validation_pairs is not",
        ),
        ({"collections": {}}, "declares no collection"),
    ],
)
def test_a_bad_declaration_is_one_line_naming_the_key(photos, declared, message):
    (photos / "empty").mkdir()
    base = {"collections": {"photos": {"images": "."}}}
    keys = {**base, **declared}
    with pytest.raises(DeclarationError, match=message) as error:
        declare_run(config(data_root=str(photos), preset="none", **keys))
    assert "\n" not in str(error.value)


def test_a_name_of_the_preset_cannot_be_declared_again():
    with pytest.raises(DeclarationError, match="collections.t2i_gallery is a name of the contest preset"):
        declare_run(config(collections={"t2i_gallery": {"images": "x"}}))


def test_the_demo_needs_the_contest_preset():
    with pytest.raises(DeclarationError, match="data_root: demo"):
        declare_run(config(preset="none", collections={"p": {"images": "."}}))


def test_a_folder_that_is_not_the_contest_layout_names_what_is_missing(tmp_path):
    (tmp_path / "附件1/ImageData").mkdir(parents=True)
    with pytest.raises(DeclarationError, match="does not hold the contest layout") as error:
        declare_run(config(data_root=str(tmp_path)))
    assert "附件2/ImageData" in str(error.value) and "附件1/ImageData," not in str(error.value)
    assert "preset: none" in str(error.value)


def test_models_are_names_or_mappings_with_their_own_training():
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    own = {"name": "tuwen-tiny", "checkpoint": "/w.pt", "train": {"epochs": 3}}
    config["models"] = ["tuwen-tiny-rn", own]
    rn, vit = declared_models(config)
    assert (rn.name, rn.checkpoint, rn.train["epochs"]) == ("tuwen-tiny-rn", "", config["train"]["epochs"])
    assert (vit.name, vit.checkpoint, vit.train["epochs"]) == ("tuwen-tiny", "/w.pt", 3)
    assert vit.stages == ["base", "finetune"] and vit.ranking_stage == "finetune"
    assert (vit.channel("finetune"), vit.channel("base")) == ("clip:tuwen-tiny", "clip:tuwen-tiny:base")
    config["models"] = [{"name": "RN50", "train": {"enabled": False}}]
    (plain,) = declared_models(config)
    assert plain.stages == ["base"] and plain.channel("base") == "clip:RN50"
    config["models"] = ["RN50", {"name": "RN50"}]
    with pytest.raises(DeclarationError, match="RN50 given twice"):
        declared_models(config)


def test_a_run_ranking_with_random_weights_says_so_and_what_to_set(photos, tmp_path):
    from tuwen.report.notices import untrained_notice
    from tuwen.report.summary import run_summary

    library = config(data_root=str(photos), preset="none", collections={"photos": {"images": "."}})
    notice = untrained_notice(declare_run(library))
    assert "tuwen-tiny-rn has random weights" in notice and "models: [ViT-B-16]" in notice
    assert f"WARNING: {notice}" in run_summary(declare_run(library), tmp_path)
    # Fine-tuned by the run (the demo), pretrained by name, or a checkpoint: nothing to say.
    assert untrained_notice(declare_run(config())) == ""
    assert untrained_notice(declare_run({**library, "models": ["ViT-B-16"]})) == ""
    own = {**library, "models": [{"name": "tuwen-tiny-rn", "checkpoint": "my.pt"}]}
    assert untrained_notice(declare_run(own)) == ""
    assert "WARNING" not in run_summary(declare_run(config()), tmp_path)
