"""Ingest: manifests and rejects for folders and CSVs, in every encoding users send."""

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tuwen.data.ingest import (
    InputError,
    read_query_list,
    read_text_set,
    rejects_of,
    scan_image_folder,
)
from tuwen.files.records import read_records
from tuwen.run.schema import schema_default

LIMIT = schema_default("ingest.max_image_pixels")


def make_folder(tmp_path):
    folder = tmp_path / "ImageData"
    folder.mkdir()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(folder / "Image1-0002.jpg", format="JPEG")
    Image.new("RGB", (16, 16), (9, 9, 9)).save(folder / "Image1-0001.jpg", format="PNG")
    (folder / "Image1-0003.jpg").write_bytes(b"")
    (folder / ".DS_Store").write_bytes(b"\0\0")
    (folder / "Thumbs.db").write_bytes(b"\0")
    return folder


def test_folder_manifest_lists_every_entry_with_a_status(tmp_path):
    manifest = scan_image_folder(make_folder(tmp_path), LIMIT, workers=2)
    status = dict(zip(manifest["image_id"], manifest["status"], strict=True))
    assert list(manifest["image_id"]) == sorted(status)
    assert status == {
        ".DS_Store": "ignored",
        "Image1-0001.jpg": "ok",
        "Image1-0002.jpg": "ok",
        "Image1-0003.jpg": "rejected",
        "Thumbs.db": "ignored",
    }
    ok = manifest[manifest["status"] == "ok"]
    assert set(ok["format"]) == {"PNG", "JPEG"} and ok["digest"].str.len().eq(64).all()
    rejects = rejects_of(manifest, "image_id", "ImageData")
    assert set(rejects["id"]) == {".DS_Store", "Thumbs.db", "Image1-0003.jpg"}


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        scan_image_folder(tmp_path / "nope", LIMIT)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_csv_is_read_in_every_encoding(tmp_path, encoding):
    path = tmp_path / "word_test.csv"
    text = 'text_id,caption\r\nWord-1,"红色的圆形,在左边"\r\nWord-2,"他说""好""\n第二行"\r\n'
    path.write_bytes(text.encode(encoding))
    records = read_records(path, ["text_id", "caption"])
    assert [row["caption"] for _, row in records.rows] == ["红色的圆形,在左边", '他说"好"\n第二行']


def test_missing_column_error_lists_the_columns_found(tmp_path):
    path = tmp_path / "word_test.csv"
    path.write_text("id,text,extra\nWord-1,你好,x\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        read_records(path, ["text_id", "caption"])
    assert "text_id, caption" in str(error.value) and "id, text, extra" in str(error.value)


def test_text_set_rejects_duplicates_and_empty_captions_naming_the_row(tmp_path):
    path = tmp_path / "word_data.csv"
    path.write_text(
        "text_id,caption,source\n Word-1 ,猫,a\nWord-2,  ,b\nWord-1,猫,c\nWord-3,狗,d\n", encoding="utf-8"
    )
    manifest = read_text_set(path, "text_id", "caption")
    assert list(manifest["text_id"]) == ["Word-1", "Word-2", "Word-1", "Word-3"]
    assert list(manifest["status"]) == ["ok", "rejected", "rejected", "ok"]
    assert list(manifest["reason_code"]) == ["", "empty_caption", "duplicate_id", ""]
    assert "row 3" in manifest.loc[2, "reason"] and "row 1" in manifest.loc[2, "reason"]


def test_pairs_naming_absent_or_rejected_images_are_rejected(tmp_path):
    images = scan_image_folder(make_folder(tmp_path), LIMIT)
    path = tmp_path / "ImageWordData.csv"
    path.write_text(
        "image_id,caption\nImage1-0001.jpg,一\nImage1-0003.jpg,二\nImage1-9999.jpg,三\n", encoding="utf-8"
    )
    manifest = read_text_set(path, "image_id", "caption", images)
    assert list(manifest["reason_code"]) == ["", "image_rejected", "image_missing"]
    assert "Image1-9999.jpg" in manifest.loc[2, "reason"]


def test_image_queries_are_checked_against_the_folder(tmp_path):
    images = scan_image_folder(make_folder(tmp_path), LIMIT)
    path = tmp_path / "image_test.csv"
    path.write_text("image_id\nImage1-0002.jpg\nImage1-0404.jpg\nImage1-0002.jpg\n", encoding="utf-8")
    manifest = read_query_list(path, images)
    assert list(manifest["reason_code"]) == ["", "image_missing", "duplicate_id"]
    assert isinstance(manifest, pd.DataFrame)


def test_nested_folders_are_read_and_ids_are_relative_paths(tmp_path):
    folder = tmp_path / "photos"
    for relative in ("2024/05/a.jpg", "2023/01/a.jpg", "top.png", "2024/notes.txt", ".cache/x.jpg"):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
    for relative in ("2024/05/a.jpg", "2023/01/a.jpg"):
        Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / relative, "JPEG")
    Image.new("RGB", (8, 8), (0, 0, 200)).save(folder / "top.png")
    (folder / "2024/notes.txt").write_text("not a photo", encoding="utf-8")
    Image.new("RGB", (8, 8)).save(folder / ".cache/x.jpg", "JPEG")
    manifest = scan_image_folder(folder, LIMIT)
    status = dict(
        zip(
            manifest["image_id"], manifest["reason_code"].where(manifest["status"] != "ok", "ok"), strict=True
        )
    )
    # Two photos of one name in two folders are two images; nothing under the folder goes unlisted.
    assert status == {
        ".cache": "hidden_folder",
        "top.png": "ok",
        "2023/01/a.jpg": "ok",
        "2024/notes.txt": "not_image_file",
        "2024/05/a.jpg": "ok",
    }
    ok = manifest[manifest["status"] == "ok"].set_index("image_id")
    assert Path(ok.loc["2024/05/a.jpg", "path"]) == folder / "2024/05/a.jpg"


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_captions_are_read_from_every_table_format_with_named_columns(tmp_path, suffix):
    rows = pd.DataFrame(
        {"sku": ["A-1", "A-2", "A-3"], "title": ["夏季新款连衣裙", "  ", "女装, 清凉"], "x": [1, 2, 3]}
    )
    path = tmp_path / f"titles{suffix}"
    if suffix == ".csv":
        rows.to_csv(path, index=False)
    elif suffix == ".tsv":
        rows.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        rows.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        rows.to_parquet(path)
    manifest = read_text_set(path, "sku", "title")
    assert list(manifest["text_id"]) == ["A-1", "A-2", "A-3"]
    assert list(manifest["caption"]) == ["夏季新款连衣裙", "", "女装, 清凉"]
    assert list(manifest["reason_code"]) == ["", "empty_caption", ""]
    assert f"titles{suffix} row 2" in manifest.loc[1, "reason"]


def test_rescan_reads_only_new_and_changed_files(tmp_path, monkeypatch):
    import os

    import tuwen.data.ingest

    folder = make_folder(tmp_path)
    first = scan_image_folder(folder, LIMIT, workers=1)
    probed = []
    real_probe = tuwen.data.ingest.probe_image
    monkeypatch.setattr(
        tuwen.data.ingest, "probe_image", lambda path, *a: probed.append(path.name) or real_probe(path, *a)
    )

    again = scan_image_folder(folder, LIMIT, workers=1, previous=first)
    assert probed == [] and again.equals(first)

    Image.new("RGB", (16, 16), (200, 0, 0)).save(folder / "Image1-0004.jpg", format="JPEG")
    changed = folder / "Image1-0002.jpg"
    before = os.stat(changed)
    Image.new("RGB", (20, 10), (0, 200, 0)).save(changed, format="JPEG")
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    grown = scan_image_folder(folder, LIMIT, workers=1, previous=again)
    assert sorted(probed) == ["Image1-0002.jpg", "Image1-0004.jpg"]  # the rejected empty file too is kept
    rows = grown.set_index("image_id")
    assert rows.loc["Image1-0002.jpg", "width"] == 20 and rows.loc["Image1-0004.jpg", "status"] == "ok"
    assert (
        rows.loc["Image1-0002.jpg", "digest"] != first.set_index("image_id").loc["Image1-0002.jpg", "digest"]
    )


def test_scan_cache_is_used_only_with_the_same_settings(tmp_path):
    from tuwen.data.ingest import read_scan_cache, write_scan_cache

    manifest = scan_image_folder(make_folder(tmp_path), LIMIT, workers=1)
    settings = {"max_pixels": 1000, "verify_decode": False}
    write_scan_cache(manifest, tmp_path / "cache.parquet", settings)
    assert read_scan_cache(tmp_path / "cache.parquet", settings).equals(manifest)
    assert read_scan_cache(tmp_path / "cache.parquet", {**settings, "verify_decode": True}) is None
    assert read_scan_cache(tmp_path / "absent.parquet", settings) is None


def test_truncation_flag_equals_cn_clip_tokenizer_and_skips_it_for_short_captions(monkeypatch):
    import tuwen.clip.tokens
    from tuwen.clip.tokens import caption_tokens, is_truncated, most_tokens

    captions = [
        "红色的圆形",
        "这是一段很长的描述，" * 5,  # 50 characters: 52 with [CLS] and [SEP], not cut
        "这是一段很长的描述，" * 6,
        "Café déjà vu, naïve façade " * 3,
        "English words are split into word pieces by the tokenizer " * 2,
        "한국어 문장 " * 10,
        "<人名>说：“你好！”" * 8,
    ]
    for caption in captions:
        assert most_tokens(caption) + 2 >= caption_tokens(caption), caption
        assert is_truncated(caption) == (caption_tokens(caption) > 52), caption
    assert [is_truncated(c) for c in captions[:3]] == [False, False, True]
    calls = []
    monkeypatch.setattr(tuwen.clip.tokens, "caption_tokens", lambda caption: calls.append(caption) or 99)
    assert not is_truncated("一只橙色的猫在沙发上睡觉") and calls == []


def test_token_counts_equal_cn_clip_tokenizer_without_importing_torch():
    import subprocess
    import sys

    from cn_clip.clip import _tokenizer

    from tuwen.clip.tokens import caption_tokens

    caption = "这是一段很长的描述，with English words 和数字 2024"
    assert caption_tokens(caption) == len(_tokenizer.tokenize(caption)) + 2
    probe = "import sys, tuwen.clip.tokens as t; t.caption_tokens('你好'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_an_image_with_several_captions_is_in_several_pairs(tmp_path):
    images = scan_image_folder(make_folder(tmp_path), LIMIT)
    path = tmp_path / "captions.csv"
    path.write_text(
        "image_id,caption\n"
        "Image1-0001.jpg,\n"  # an empty caption does not take the image's first id
        "Image1-0001.jpg,一只猫\n"
        "Image1-0002.jpg,两只狗\n"
        "Image1-0001.jpg,猫在睡觉\n"
        "Image1-0001.jpg,一只猫\n"  # the same pair again
        "Image1-0001.jpg,猫和球\n",
        encoding="utf-8",
    )
    manifest = read_text_set(path, "image_id", "caption", images)
    assert list(manifest["reason_code"]) == ["empty_caption", "", "", "", "duplicate_id", ""]
    assert "already paired with this caption in row 2" in manifest["reason"][4]
    ok = manifest[manifest["status"] == "ok"]
    assert list(ok["text_id"]) == [
        "Image1-0001.jpg",
        "Image1-0002.jpg",
        "Image1-0001.jpg#2",
        "Image1-0001.jpg#3",
    ]
    assert list(ok["image_id"]) == [
        "Image1-0001.jpg",
        "Image1-0002.jpg",
        "Image1-0001.jpg",
        "Image1-0001.jpg",
    ]
