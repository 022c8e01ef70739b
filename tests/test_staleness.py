"""No stale results: every setting of the schema, changed on a finished run, reruns what it changes.

The keys come from config.schema.yaml itself, so a key added later is checked too. A key
that can change results must rerun at least one job, and the settings files it is
recorded in must be exactly those that tuwen.run.settings groups it in; a speed-only key must
rerun nothing; a key marked `x-reruns-nothing` may only make outputs that do not exist
yet. Real runs then change one key of every settings group and check that the outputs
changed, not only that jobs were planned.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import FUSION_DEMO, planned_jobs_with_reasons, snakemake
from tuwen.files.parquet import read_metadata
from tuwen.run.declaration import IMAGES
from tuwen.run.schema import RERUNS_NOTHING, SPEED_ONLY, changes_results, leaf_keys, load_schema
from tuwen.run.settings import SETTINGS_GROUPS, grouped_keys, read_settings

pytestmark = pytest.mark.slow

SCHEMA = load_schema()
SETTINGS = leaf_keys(SCHEMA)


def test_every_setting_is_classified_and_described():
    assert len(SETTINGS) > 40
    results = {key for key, spec in SETTINGS.items() if changes_results(spec)}
    for key, spec in SETTINGS.items():
        assert not (spec.get(SPEED_ONLY) and RERUNS_NOTHING in spec), key
        description = spec["description"]
        if spec.get(SPEED_ONLY):
            assert "Speed only" in description, key
        elif RERUNS_NOTHING in spec:
            assert spec[RERUNS_NOTHING] and "Reruns nothing" in description, key
        else:
            assert "Changing it reruns" in description, key
    # Every result setting reaches its jobs through a settings group, and only those do;
    # a switch that only adds outputs may be in the declared run, which no stage reads.
    assert results <= grouped_keys()
    for key in grouped_keys() - results:
        assert RERUNS_NOTHING in SETTINGS[key], key
        assert {group for group, keys in SETTINGS_GROUPS.items() if key in keys} == {"run"}, key


def with_setting(config: dict, key: str, value: Any) -> dict:
    changed = copy.deepcopy(config)
    *sections, name = key.split(".")
    place = changed
    for section in sections:
        place = place.setdefault(section, {})
    place[name] = value
    return changed


def current_value(run: Path, key: str) -> Any:
    """The value a finished run used: its config file over the schema's defaults."""
    spec, value = SETTINGS[key], FUSION_DEMO
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return spec.get("default") if value is None else value


def other_value(run: Path, key: str) -> Any:
    """A valid value of `key` other than the finished run's, from its schema type."""
    spec, current = SETTINGS[key], current_value(run, key)
    demo_data = run / "results/demo/data"
    strings = {
        # A copy of the run's own data, elsewhere: the same contest layout by another path.
        "data_root": str(demo_data),
        # The same contest, declared in full instead of by the preset, from another path.
        "preset": "none",
        # A collection no task searches: ingested, encoded and served beside the tasks.
        "collections": {"extra": {"images": "附件2/ImageData"}},
        # A task of the run's own collections beside the preset's.
        "tasks": {"again": {"queries": "t2i_queries", "gallery": "t2i_gallery", "k": 3}},
        "training.pairs": str(copied(demo_data / "附件1/ImageWordData.csv", run / "pairs.csv")),
        "training.images": str(demo_data / "附件1/ImageData"),
        "training.image_column": "image",
        "training.caption_column": "text",
        # Validation pairs declared apart: here the training pairs again, from another path.
        "training.validation_pairs": str(copied(demo_data / "附件1/ImageWordData.csv", run / "valid.csv")),
        "training.validation_images": str(demo_data / "附件1/ImageData"),
        "ground_truth": str(run / "results/demo/data/ground_truth.csv"),
        "weights_dir": str(run / "weights"),
        # The demo's labels again, from another path.
        "tags.labels": str(copied(demo_data / "labels.txt", run / "labels.txt")),
        "models": ["tuwen-tiny"],
    }
    options = spec.get("oneOf", [])
    if key in strings:
        return strings[key]
    if "enum" in spec:
        return next(choice for choice in spec["enum"] if choice != current)
    kind = spec.get("type") or next(o["type"] for o in options if "type" in o)
    if current == "auto" and options:
        return 1
    if kind == "boolean":
        return not current
    if kind == "integer":
        return current + 1 if current + 1 <= spec.get("maximum", current + 1) else current - 1
    if kind == "number":
        return round(current + 0.1, 6) if current + 0.1 < spec.get("exclusiveMaximum", 2) else current / 2
    if kind == "array":
        return current[:-1] if len(current) > spec.get("minItems", 0) else [*current, current[-1] * 2]
    assert key in strings, f"{key}: give this test a valid other value for the string setting"
    return strings[key]


def copied(source: Path, target: Path) -> Path:
    if not target.exists():
        shutil.copyfile(source, target)
    return target


def changed_config(run: Path, key: str) -> dict:
    """The finished run's config with `key` changed (and, for `preset`, the run declared in full)."""
    value = other_value(run, key)
    changed = with_setting(FUSION_DEMO, key, value)
    if key == "training.validation_images":
        # Validation images are read only with validation pairs declared.
        changed["training"]["validation_pairs"] = other_value(run, "training.validation_pairs")
    if key == "preset":
        from tuwen.run import contest

        changed.update(
            data_root=str(run / "results/demo/data"),
            collections=contest.COLLECTIONS,
            tasks=contest.TASKS,
            training=contest.TRAINING,
        )
    return changed


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_a_changed_setting_reruns_exactly_what_it_changes(fusion_run, key):
    value = other_value(fusion_run, key)
    result = snakemake(fusion_run, "-n", config=changed_config(fusion_run, key))
    jobs = [(rule, w, why) for rule, w, why in planned_jobs_with_reasons(result.stdout) if rule != "all"]
    spec = SETTINGS[key]
    if spec.get(SPEED_ONLY):
        assert jobs == [], f"speed-only {key}={value!r} reran: {jobs}"
    elif RERUNS_NOTHING in spec:
        # The declared run and the finished record list every output, so they are rewritten.
        records = {("record_settings", "run"), ("finish_run", None)}
        rewritten = [
            (rule, why)
            for rule, w, why in jobs
            if not why.startswith("Missing output files") and (rule, w.get("group")) not in records
        ]
        assert rewritten == [], f"{key}={value!r} reran existing outputs: {rewritten}"
    else:
        # Groups of one item are recorded per item: train.<model>.json, collection.<name>.json.
        recorded = {w["group"].partition(".")[0] for rule, w, _ in jobs if rule == "record_settings"}
        groups = {group for group, keys in SETTINGS_GROUPS.items() if key in keys}
        assert recorded and recorded <= groups, f"{key}={value!r}: settings {recorded}, not within {groups}"
        assert any(rule != "record_settings" for rule, _, _ in jobs), f"{key}={value!r} reran no stage"


# ---- real runs: the changed outputs, one key of every settings group at least ----------


@pytest.fixture(scope="module")
def changing_run(fusion_run, tmp_path_factory) -> Path:
    """A copy of the finished run (Snakemake's records included), for runs that change it."""
    copy_dir = tmp_path_factory.mktemp("staleness") / "run"
    shutil.copytree(fusion_run, copy_dir, symlinks=True)
    return copy_dir


def rewritten_after(run: Path, config: dict, paths: list[str]) -> dict[str, bool]:
    """Run for real with `config`; give, for each path, whether the run rewrote it."""
    before = {p: (run / p).stat().st_mtime_ns for p in paths}
    snakemake(run, config=config)
    return {p: (run / p).stat().st_mtime_ns != before[p] for p in paths}


STAGE_CHANGES = {
    "fusion.weights": [0.5],
    "retrieval.keep_top": 12,
    "figures.queries_per_task": 4,
    "browse.thumbnail_size": 48,
    "index.min_items": 0,
    "tags.top": 2,
}


def test_downstream_settings_change_their_outputs(changing_run):
    run = changing_run
    truth = pd.read_csv(run / "results/demo/data/ground_truth.csv")
    fewer = run / "fewer_truth.csv"
    truth.iloc[: len(truth) // 2].to_csv(fewer, index=False)
    config = FUSION_DEMO
    for key, value in {**STAGE_CHANGES, "ground_truth": str(fewer)}.items():
        config = with_setting(config, key, value)
    metrics_before = json.loads((run / "results/eval/metrics.json").read_text())
    train_log = "results/models/tuwen-tiny-rn/finetune/train_log.csv"
    rewritten = rewritten_after(run, config, ["results/fusion/chosen.json", train_log])
    assert rewritten == {"results/fusion/chosen.json": True, train_log: False}
    # fusion: a channel after the first now has weight 0.5, never the old 1.0 beside it.
    validation = pd.read_csv(run / "results/fusion/validation.csv")
    weights = [list(json.loads(w).values()) for w in validation["weights"]]
    assert all(set(w) <= {0, 0.5, 1} and w.count(1) == 1 for w in weights)
    assert any(0.5 in w for w in weights)
    assert read_settings(run / "results/settings/fusion.json")["fusion"]["weights"] == [0.5]
    # retrieval: 12 hits kept per query.
    topk = pd.read_parquet(run / "results/retrieval/t2i/topk.parquet")
    assert topk.groupby("query_id").size().eq(12).all()
    # figures: four sampled queries per direction.
    assert (run / "results/figures/t2i/query_3.png").exists()
    # browse: thumbnails of the new size.
    page_data = (run / "results/browse/data.js").read_text(encoding="utf-8")
    thumbnail = next((run / "results/browse/thumbs").glob("*-48.jpg"))
    assert thumbnail.name in page_data and max(Image.open(thumbnail).size) == 48
    # index: every gallery now has one (fused: the server scores its candidates exactly).
    described = json.loads((run / "results/index/t2i_gallery/index.json").read_text())
    assert described["settings"]["min_items"] == 0 and described["index"]["recall@10"] >= 0.9
    # tags: two labels a photo now.
    tags = pd.read_csv(run / "results/tags/t2i_gallery.csv")
    assert tags.groupby("id").size().eq(2).all() and len(tags) > 0
    # ground truth: half the queries have an answer now.
    metrics = json.loads((run / "results/eval/metrics.json").read_text())
    scored = [sum(m[task]["queries_scored"] for task in ("t2i", "i2t")) for m in (metrics, metrics_before)]
    assert scored[0] < scored[1]


def test_upstream_settings_change_their_outputs(changing_run):
    run = changing_run
    # One image larger than the demo's 96 x 96, for a pixel limit that rejects it alone.
    large = run / "results/demo/data/附件2/ImageData/Image14001002-9999.jpg"
    Image.new("RGB", (150, 150), (200, 30, 30)).save(large)
    config = FUSION_DEMO
    for key, value in {
        **STAGE_CHANGES,
        "encode.jpeg_draft": True,
        "ingest.max_image_pixels": 120 * 120,
        "train.val_fraction": 0.4,
    }.items():
        config = with_setting(config, key, value)
    init = str(run / "results/models/init/tuwen-tiny-rn-seed0.pt")
    config["models"] = [{"name": "tuwen-tiny-rn", "checkpoint": init}]
    checkpoint = "results/models/tuwen-tiny-rn/finetune/checkpoint.pt"
    ocr = "results/ocr/i2t_images/s00000.parquet"
    rewritten = rewritten_after(run, config, [checkpoint, ocr])
    assert rewritten == {checkpoint: True, ocr: True}
    # model: the card names the checkpoint given.
    card = json.loads((run / "results/models/tuwen-tiny-rn/base/model.json").read_text())
    assert card["checkpoint"] == init
    # ingest: the image over the limit is rejected, the others are not.
    rejects = pd.read_csv(run / "results/manifest/t2i_gallery/rejects.csv")
    rejected = rejects[rejects["id"].str.startswith("Image")]
    assert rejected["id"].tolist() == [large.name] and "pixels" in rejected["reason"].item()
    # encode: every image feature shard of both models says how its pixels were read.
    for stage in ("base", "finetune"):
        tag = json.loads((run / f"results/models/tuwen-tiny-rn/{stage}/model.json").read_text())["tag"]
        shards = list((run / "results/features" / tag).glob("*_[ig]*/*.parquet"))
        image_shards = [s for s in shards if read_metadata(s)["kind"] == IMAGES]
        assert len(image_shards) >= 3
        assert all(read_metadata(s)["image_decoding"]["jpeg_draft"] is True for s in image_shards)
    # train and validation: 40% held out.
    trained = json.loads((run / "results/models/tuwen-tiny-rn/finetune/val_metrics.json").read_text())
    validation = pd.read_parquet(run / "results/manifest/val_texts/texts.parquet")
    assert trained["validation_pairs"] == len(validation)
    assert read_settings(run / "results/settings/train.tuwen-tiny-rn.json")["train"]["val_fraction"] == 0.4


def test_the_demo_settings_remake_the_demo(changing_run):
    config = with_setting(FUSION_DEMO, "demo.queries", 21)
    snakemake(changing_run, config=config)
    for table in ("result1.csv", "result2.csv"):
        assert pd.read_csv(changing_run / "results" / table).iloc[:, 0].nunique() == 21
