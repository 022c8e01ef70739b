"""Plans of paths, built from a declared run without Snakemake: which file is what, and named inputs."""

from __future__ import annotations

from tests.conftest import config_with
from tuwen.run import layout
from tuwen.run.declaration import TEXTS, declare_run
from tuwen.run.plans import (
    accounting_plan,
    finished_plan,
    fusion_task_plan,
    plan_inputs,
    query_order,
    run_targets,
)


class Shards:
    """Two current shards of every collection, and model tags made from model and stage."""

    def features(self, collection, model, stage):
        return [
            layout.features(f"{model.name}-{stage}-000000000000", collection, s) for s in ("s00000", "s00001")
        ]

    def ocr(self, collection):
        return [layout.ocr(collection, "s00000")]

    def sentences(self, collection, encoder):
        return [layout.sentences(encoder, collection, "s00000")]


FUSED = {"data_root": "demo", "fusion": {"enabled": True, "text_encoders": []}}


def test_a_fusion_plan_names_every_file_of_a_task():
    run = declare_run(config_with(FUSED))
    plan = fusion_task_plan(run, run.tasks["i2t"], Shards())
    assert plan["direction"] == "i2t" and plan["query_order"] == "results/retrieval/i2t/queries.parquet"
    assert list(plan["channels"]) == ["clip:tuwen-tiny-rn", "clip:tuwen-tiny-rn:base"]
    base = plan["channels"]["clip:tuwen-tiny-rn:base"]
    assert base["card"] == layout.model_card("tuwen-tiny-rn", "base")
    assert base["gallery"][1] == "results/features/tuwen-tiny-rn-base-000000000000/i2t_gallery/s00001.parquet"
    # OCR reads the image side, the queries here, against the captions of the gallery.
    assert plan["ocr"] == {
        "images_are_queries": True,
        "read": ["results/ocr/i2t_images/s00000.parquet"],
        "captions": "results/manifest/i2t_gallery/texts.parquet",
    }
    several = declare_run(config_with({"data_root": "demo", "models": ["tuwen-tiny-rn", "tuwen-tiny"]}))
    validation = fusion_task_plan(several, several.validation_tasks["t2i"], Shards(), validation=True)
    assert validation["query_order"] == "results/manifest/val_texts/texts.parquet"
    assert validation["query_id_column"] == "text_id" and validation["ocr"] is None
    assert list(validation["channels"]) == ["clip:tuwen-tiny-rn", "clip:tuwen-tiny"]
    assert run.ocr_collections() == ["t2i_gallery", "i2t_images", "val_images"]


def test_named_inputs_are_the_plans_files_under_the_keys_that_lead_to_them():
    run = declare_run(config_with({**FUSED, "fusion": {"enabled": True, "text_encoders": []}}))
    plan = {"t2i": fusion_task_plan(run, run.tasks["t2i"], Shards())}
    inputs = plan_inputs(plan)
    assert inputs["t2i_channels_clip_tuwen_tiny_rn_queries"] == Shards().features(
        "t2i_queries", run.ranking_model, "finetune"
    )
    assert inputs["t2i_ocr_captions"] == ["results/manifest/t2i_queries/texts.parquet"]
    # Settings beside the files are not inputs, and every file of the plan is one.
    assert not any(key.endswith(("direction", "ranking_channels", "images_are_queries")) for key in inputs)
    # the order and two assignments; two channels' cards and 2 + 2 feature shards each; the
    # OCR shard and the captions
    assert sum(len(files) for files in inputs.values()) == 3 + 2 * 5 + 2


def test_a_gallery_with_no_task_is_accounted_and_encoded(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    config = config_with(
        {"data_root": str(tmp_path), "preset": "none", "collections": {"photos": {"images": "."}}}
    )
    run = declare_run(config)
    plan = accounting_plan(run, Shards())
    assert plan["tasks"] == {}
    assert plan["collections"]["photos"]["features"] == Shards().features("photos", run.ranking_model, "base")
    assert plan["collections"]["photos"]["manifest"] == "results/manifest/photos/images.parquet"
    # The finished run's record names the photos' files, and the run's targets end with it.
    finished = finished_plan(run, Shards())
    assert finished["collections"]["photos"]["features"] == {
        "clip:tuwen-tiny-rn": plan["collections"]["photos"]["features"]
    }
    assert finished["tasks"] == {} and finished["cards"] == {
        "clip:tuwen-tiny-rn": layout.model_card("tuwen-tiny-rn", "base")
    }
    targets = run_targets(run, config)
    assert targets[-1] == layout.finished() and layout.manifest("photos", "images") in targets


def test_the_finished_plan_of_a_fused_run_names_every_channel_of_its_tasks():
    run = declare_run(config_with({"data_root": "demo", "fusion": {"enabled": True}}))
    finished = finished_plan(run, Shards())
    gallery = finished["collections"]["t2i_gallery"]
    assert list(gallery["features"]) == [
        "clip:tuwen-tiny-rn",
        "clip:tuwen-tiny-rn:base",
        "text:use-m3",
        "text:e5-small",
    ]
    assert gallery["ocr"] == ["results/ocr/t2i_gallery/s00000.parquet"]
    assert finished["tasks"]["t2i"] == {"topk": layout.topk("t2i"), "query_bank": layout.query_bank("t2i")}
    assert finished["chosen"] == layout.fusion("chosen.json") and set(finished["indexes"]) == {
        "t2i_gallery",
        "i2t_gallery",
    }


def test_the_order_of_a_tasks_queries():
    run = declare_run(config_with({"data_root": "demo"}))
    assert query_order(run, run.tasks["i2t"]) == layout.query_list("i2t")
    assert query_order(run, run.tasks["t2i"]) == layout.manifest("t2i_queries", TEXTS)
