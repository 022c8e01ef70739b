"""The field's dataset formats read in place: CN-CLIP TSV/JSONL, webdataset tars, Hugging Face
parquet, COCO captions; every record in the manifest or its rejects, with the reason."""

from __future__ import annotations

import base64
import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest

from tests.conftest import config_with
from tests.dataset_formats import (
    hf_row_ids,
    items,
    webdataset_keys,
    write_cn_clip,
    write_coco,
    write_hf_parquet,
    write_webdataset,
)
from tuwen.data.ingest import OK, REJECTED, read_text_set, scan_containers
from tuwen.files.containers import CN_CLIP, PARQUET, WEBDATASET, detect_image_format, source_stamp
from tuwen.files.images import content_digest, load_image, read_image_bytes
from tuwen.files.records import read_records
from tuwen.ranking.recall import read_positives
from tuwen.run.declaration import IMAGES, TEXTS, DeclarationError, GroundTruth, declare_run

MADE = items(12)
BY_NUMBER = {item.number: item for item in MADE}


def ok_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest[manifest["status"] == OK]


def test_cn_clip_tsv_images_are_read_in_place_with_their_ids(tmp_path):
    root = write_cn_clip(tmp_path, "test", MADE)
    assert detect_image_format(root / "test_imgs.tsv") == CN_CLIP
    manifest = scan_containers(root / "test_imgs.tsv", CN_CLIP, max_pixels=10**8)
    assert list(manifest["image_id"]) == [str(i.number) for i in MADE] and (manifest["status"] == OK).all()
    for row in manifest.itertuples():
        item = BY_NUMBER[int(row.image_id)]
        # The locator reads the very bytes (CN-CLIP's urlsafe base64), where every image reader reads.
        assert read_image_bytes(row.path) == item.jpeg and row.digest == content_digest(item.jpeg)
    image, digest = load_image(manifest["path"][0], None)
    assert image.size == (96, 96) and digest == manifest["digest"][0]
    assert not any(p.suffix == ".jpg" for p in tmp_path.rglob("*"))  # nothing unpacked


def test_bad_tsv_lines_are_rejected_with_the_line_and_reason(tmp_path):
    good = base64.b64encode(MADE[0].jpeg).decode()  # standard base64 is read too
    (tmp_path / "test_imgs.tsv").write_text(
        f"1\t{good}\nno tab here\n3\t!!!not base64!!!\n4\t{base64.b64encode(b'text').decode()}\n1\t{good}\n",
        encoding="utf-8",
    )
    manifest = scan_containers(tmp_path / "test_imgs.tsv", CN_CLIP, max_pixels=10**8)
    assert len(manifest) == 5
    codes = dict(zip(manifest.index, manifest["reason_code"], strict=True))
    assert manifest["status"].tolist() == [OK, REJECTED, REJECTED, REJECTED, REJECTED]
    assert [codes[i] for i in range(1, 5)] == ["no_image", "no_image", "not_an_image", "duplicate_id"]
    assert "record 2: no tab" in manifest["reason"][1] and "not valid base64" in manifest["reason"][2]
    assert "already given by" in manifest["reason"][4]


def assert_read_in_place(manifest: pd.DataFrame, ids: dict[int, str], captions: pd.DataFrame) -> None:
    """The manifest lists every item by the id its format gives (`ids`: item number -> id), its
    locator reads the very bytes, and the captions read are the items' captions by that id."""
    assert list(manifest["image_id"]) == [ids[i.number] for i in MADE]
    number_of = {item_id: number for number, item_id in ids.items()}
    for row in manifest.itertuples():
        assert read_image_bytes(row.path) == BY_NUMBER[number_of[row.image_id]].jpeg
    assert dict(zip(captions["text_id"], captions["caption"], strict=True)) == {
        ids[i.number]: i.caption for i in MADE
    }


def test_webdataset_shards_give_keys_images_and_captions(tmp_path):
    root = write_webdataset(tmp_path / "shards", MADE, per_shard=5)
    assert detect_image_format(root) == WEBDATASET and len(list(root.glob("*.tar"))) == 3
    manifest = scan_containers(root, WEBDATASET, max_pixels=10**8)
    assert_read_in_place(manifest, webdataset_keys(MADE, 5), read_text_set(root, "key", "txt"))
    # The .json member's fields are columns too (img2dataset's caption, url, ...).
    assert "url" in read_records(root, ["key"]).columns


def test_a_tar_sample_without_an_image_is_rejected_and_a_new_shard_leaves_the_others(tmp_path):
    root = write_webdataset(tmp_path / "shards", MADE[:4], per_shard=4)
    with tarfile.open(root / "00001.tar", "w") as tar:
        for name, data in (("lonely.txt", "只有文字".encode()), ("x.jpg", MADE[5].jpeg)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    manifest = scan_containers(root, WEBDATASET, max_pixels=10**8)
    lonely = manifest.set_index("image_id").loc["lonely"]
    assert lonely["status"] == REJECTED and lonely["reason_code"] == "no_image"
    assert "00001.tar record 1: no image member in this sample (txt)" in lonely["reason"]
    # A third shard: the first two are not read again (their rows are kept as they were).
    before = source_stamp(root, WEBDATASET)
    write_webdataset(root, MADE[6:8], per_shard=2, first_shard=2)
    assert source_stamp(root, WEBDATASET) != before
    first = manifest.copy()
    first.loc[first["image_id"] == "000000000", "width"] = 1  # a mark: kept rows are not re-read
    again = scan_containers(root, WEBDATASET, max_pixels=10**8, previous=first)
    assert again.set_index("image_id").loc["000000000", "width"] == 1
    assert len(ok_rows(again)) == len(ok_rows(manifest)) + 2


def test_hugging_face_parquet_images_and_captions_share_row_ids(tmp_path):
    root = write_hf_parquet(tmp_path, MADE) / "data"
    assert detect_image_format(root) == PARQUET
    manifest = scan_containers(root, PARQUET, max_pixels=10**8, image_column="image", id_column="")
    assert_read_in_place(manifest, hf_row_ids(MADE), read_text_set(root, "_row", "caption"))
    with pytest.raises(Exception, match="no image column 'picture'"):
        scan_containers(root, PARQUET, max_pixels=10**8, image_column="picture", id_column="")


def test_coco_captions_give_annotation_ids_and_file_names(tmp_path):
    root = write_coco(tmp_path, MADE)
    captions = read_text_set(root / "captions.json", "id", "caption")
    assert list(captions["text_id"]) == [str(5000 + i.number) for i in MADE]
    truth = read_positives(GroundTruth(str(root / "captions.json"), "id", "file_name"))
    assert truth == {str(5000 + i.number): {i.file_name} for i in MADE}


def test_cn_clip_texts_give_list_valued_ground_truth_and_one_pair_per_image(tmp_path):
    root = tmp_path
    lines = [
        {"text_id": 7, "text": "两只猫", "image_ids": [1, 2]},
        {"text_id": 8, "text": "一只狗", "image_ids": [3]},
    ]
    (root / "valid_texts.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    file = str(root / "valid_texts.jsonl")
    assert read_positives(GroundTruth(file, "text_id", "image_ids")) == {"7": {"1", "2"}, "8": {"3"}}
    assert read_positives(GroundTruth(file, "image_ids", "text_id")) == {"1": {"7"}, "2": {"7"}, "3": {"8"}}
    images = pd.DataFrame({"image_id": ["1", "2", "3"], "status": [OK] * 3, "reason": [""] * 3})
    pairs = read_text_set(file, "image_ids", "text", images)
    assert list(zip(pairs["image_id"], pairs["caption"], strict=True)) == [
        ("1", "两只猫"),
        ("2", "两只猫"),
        ("3", "一只狗"),
    ]
    # As captions (not pairs), a list where one id is wanted is a reject naming the row.
    captions = read_text_set(file, "image_ids", "text")
    assert set(captions["reason_code"]) == {"list_value"} and "row 1" in captions["reason"][0]


def test_the_cn_clip_preset_declares_training_and_both_directions_on_test(tmp_path):
    write_cn_clip(tmp_path, "train", MADE[:8])
    write_cn_clip(tmp_path, "test", MADE[8:])
    run = declare_run(config_with({"data_root": str(tmp_path), "preset": "cn_clip"}))
    assert set(run.tasks) == {"t2i", "i2t"} and run.trains
    t2i = run.tasks["t2i"]
    assert (t2i.queries, t2i.gallery, t2i.k) == ("test_texts", "test_images", 10)
    assert run.collections["test_images"].format == CN_CLIP and run.collections["test_texts"].kind == TEXTS
    assert run.collections["train_images"].format == CN_CLIP
    assert run.collections["train_texts"].id_column == "image_ids"
    assert not run.validates_apart  # no valid split: a share of train is held out
    assert (
        t2i.ground_truth.gallery_column == "image_ids"
        and run.tasks["i2t"].ground_truth.query_column == "image_ids"
    )
    # Without a test split the tasks rank valid; without either, one line says what is missing.
    (tmp_path / "test_imgs.tsv").rename(tmp_path / "valid_imgs.tsv")
    (tmp_path / "test_texts.jsonl").rename(tmp_path / "valid_texts.jsonl")
    on_valid = declare_run(config_with({"data_root": str(tmp_path), "preset": "cn_clip"}))
    assert on_valid.tasks["t2i"].gallery == "valid_images"
    # Fine-tuning validates on valid, as CN-CLIP's scripts do; the pairs are not searched.
    assert on_valid.validates_apart
    pairs = on_valid.collections["validation_texts"]
    assert pairs.source == str(tmp_path / "valid_texts.jsonl") and pairs.pairs_with == "validation_images"
    assert on_valid.collections["validation_images"].format == CN_CLIP
    assert "validation_images" not in on_valid.searchable()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DeclarationError, match="not a CN-CLIP dataset folder.*valid_imgs.tsv"):
        declare_run(config_with({"data_root": str(empty), "preset": "cn_clip"}))


def test_container_collections_are_detected_and_checked(tmp_path):
    write_webdataset(tmp_path / "shards", MADE, per_shard=6)
    write_hf_parquet(tmp_path / "hf", MADE)
    declared = {
        "data_root": str(tmp_path),
        "preset": "none",
        "collections": {
            "tars": {"images": "shards"},
            "hf": {"images": "hf/data"},
            "captions": {"texts": "shards", "id_column": "key", "caption_column": "txt"},
        },
    }
    run = declare_run(config_with(declared))
    assert run.collections["tars"].format == WEBDATASET and run.collections["hf"].format == PARQUET
    assert run.collections["hf"].image_column == "image" and run.collections["tars"].kind == IMAGES
    declared["collections"]["missing"] = {"images": "none.tsv"}
    with pytest.raises(DeclarationError, match="collections.missing.images: .*none.tsv does not exist"):
        declare_run(config_with(declared))


def test_features_equal_cn_clip_extract_features_path_on_its_own_lmdb(tmp_path):
    """cn_clip's evaluation reads its LMDB (built by its own build_lmdb_dataset.py from the
    TSV) through its EvalImgDataset and EvalTxtDataset, then encodes and L2-normalises, as
    extract_features.py does: tuwen reading the TSV in place gives the same features."""
    import subprocess
    import sys

    import torch
    from cn_clip.eval.data import EvalImgDataset, EvalTxtDataset

    from tuwen.clip.architectures import CONTEXT_LENGTH, architecture
    from tuwen.clip.encode import encode_images, encode_texts
    from tuwen.clip.models import build_model

    root = write_cn_clip(tmp_path, "test", MADE)
    # Captions as users write them: Latin letters in capitals, curly quotes.
    texts = [json.loads(line) for line in (root / "test_texts.jsonl").read_text().splitlines()]
    texts[0]["text"] = "一件“ABC”牌的T恤"
    (root / "test_texts.jsonl").write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts))
    command = [sys.executable, "-m", "cn_clip.preprocess.build_lmdb_dataset", "--data_dir", str(root)]
    subprocess.run([*command, "--splits", "test"], check=True, capture_output=True)
    arch = architecture("tuwen-tiny-rn")
    model = build_model(arch, 0).eval()
    with torch.no_grad():
        reference_images = {}
        for image_id, pixels in EvalImgDataset(str(root / "lmdb/test/imgs"), resolution=arch.resolution):
            feature = model.encode_image(pixels[None])
            reference_images[str(image_id)] = (feature / feature.norm(dim=-1, keepdim=True))[0].numpy()
        reference_texts = {}
        for text_id, tokens in EvalTxtDataset(str(root / "test_texts.jsonl"), max_txt_length=CONTEXT_LENGTH):
            feature = model.encode_text(tokens[None])
            reference_texts[str(text_id)] = (feature / feature.norm(dim=-1, keepdim=True))[0].numpy()

    manifest = scan_containers(root / "test_imgs.tsv", CN_CLIP, max_pixels=10**8)
    images = pd.DataFrame(
        {"id": manifest["image_id"], "digest": manifest["digest"], "source": manifest["path"]}
    )
    encoded = encode_images(model, images, arch.resolution, "cpu", 8, 0, None, progress=False)
    for image_id, row in zip(encoded.ids, encoded.embeddings, strict=True):
        row = row / np.linalg.norm(row)
        assert np.allclose(row, reference_images[image_id], atol=1e-5), image_id
    captions = read_text_set(root / "test_texts.jsonl", "text_id", "text")
    items_ = pd.DataFrame({"id": captions["text_id"], "digest": "", "source": captions["caption"]})
    encoded = encode_texts(model, items_, "cpu", progress=False)
    for text_id, row in zip(encoded.ids, encoded.embeddings, strict=True):
        row = row / np.linalg.norm(row)
        assert np.allclose(row, reference_texts[text_id], atol=1e-5), text_id


def test_cn_clip_lmdb_images_are_read_in_place_and_the_preset_uses_them(tmp_path):
    import subprocess
    import sys

    from tuwen.files.containers import LMDB

    root = write_cn_clip(tmp_path, "test", MADE)
    command = [sys.executable, "-m", "cn_clip.preprocess.build_lmdb_dataset", "--data_dir", str(root)]
    subprocess.run([*command, "--splits", "test"], check=True, capture_output=True)
    (root / "test_imgs.tsv").unlink()  # only the LMDB is left, as a user of cn_clip may have it
    images = root / "lmdb/test/imgs"
    assert detect_image_format(images) == LMDB
    manifest = scan_containers(images, LMDB, max_pixels=10**8)
    assert (
        sorted(manifest["image_id"]) == sorted(str(i.number) for i in MADE)
        and (manifest["status"] == OK).all()
    )
    for row in manifest.itertuples():
        assert read_image_bytes(row.path) == BY_NUMBER[int(row.image_id)].jpeg
    run = declare_run(config_with({"data_root": str(root), "preset": "cn_clip"}))
    assert run.collections["test_images"].format == LMDB and run.collections["test_images"].source == str(
        images
    )


def test_a_shards_header_is_read_from_its_first_sample_with_text(tmp_path):
    from tuwen.files.records import table_header

    root = write_webdataset(tmp_path / "shards", MADE, per_shard=5)
    columns, has_rows = table_header(root)
    assert has_rows and set(read_records(root, ["key"]).columns) == set(columns) >= {"key", "txt", "url"}
    write_coco(tmp_path / "coco", MADE)
    assert table_header(tmp_path / "coco/captions.json") == (["id", "image_id", "caption", "file_name"], True)
