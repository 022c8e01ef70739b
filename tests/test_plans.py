"""Plans of paths, built from a declared run without Snakemake: which file is what, and named inputs."""

from __future__ import annotations

from tuwen.run import layout
from tuwen.run.declaration import declare_run
from tuwen.run.layout import Model
from tuwen.run.plans import accounting_plan, fusion_task_plan, ocr_collections, plan_inputs, query_order


class Shards:
    """Two current shards of every collection, and model tags made from model and stage."""

    def features(self, collection, model, stage):
        return [
            layout.features(f"{model.name}-{stage}-000000000000", collection, s) for s in ("s00000", "s00001")
        ]

    def ocr(self, collection):
        return [layout.ocr(collection, "s00000")]


MODEL = Model("tuwen-tiny-rn", train={"enabled": True, "lock_image": False})


def test_a_fusion_plan_names_every_file_of_a_task():
    run = declare_run({"data_root": "demo"})
    plan = fusion_task_plan(run, run.tasks["i2t"], [MODEL], Shards(), fuse_stages=True, use_ocr=True)
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
    validation = fusion_task_plan(run, run.validation_tasks["t2i"], [MODEL], Shards(), False, False, True)
    assert validation["query_order"] == "results/manifest/val_texts/texts.parquet"
    assert validation["query_id_column"] == "text_id" and validation["ocr"] is None
    assert ocr_collections(run) == ["t2i_gallery", "i2t_images", "val_images"]


def test_named_inputs_are_the_plans_files_under_the_keys_that_lead_to_them():
    run = declare_run({"data_root": "demo"})
    plan = {"t2i": fusion_task_plan(run, run.tasks["t2i"], [MODEL], Shards(), False, True)}
    inputs = plan_inputs(plan)
    assert inputs["t2i_channels_clip_tuwen_tiny_rn_queries"] == Shards().features(
        "t2i_queries", MODEL, "finetune"
    )
    assert inputs["t2i_ocr_captions"] == ["results/manifest/t2i_queries/texts.parquet"]
    # Settings beside the files are not inputs, and every file of the plan is one.
    assert not any(key.endswith(("direction", "ranking_channels", "images_are_queries")) for key in inputs)
    # the order and two assignments; a card and 2 + 2 feature shards; the OCR shard and the captions
    assert sum(len(files) for files in inputs.values()) == 3 + 5 + 2


def test_a_gallery_with_no_task_is_accounted_and_encoded(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    run = declare_run(
        {"data_root": str(tmp_path), "preset": "none", "collections": {"photos": {"images": "."}}}
    )
    plan = accounting_plan(run, Model("tuwen-tiny-rn"), Shards())
    assert plan["tasks"] == {}
    assert plan["collections"]["photos"]["features"] == Shards().features(
        "photos", Model("tuwen-tiny-rn"), "base"
    )
    assert plan["collections"]["photos"]["manifest"] == "results/manifest/photos/images.parquet"


def test_the_order_of_a_tasks_queries():
    run = declare_run({"data_root": "demo"})
    assert query_order(run, run.tasks["i2t"]) == layout.query_list("i2t")
    assert query_order(run, run.tasks["t2i"]) == layout.manifest("t2i_queries", layout.TEXTS)
