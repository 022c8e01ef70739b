"""Bad input: every case gets a clear reason, no id is lost, a killed run resumes to the same bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import kill_when, snakemake, snakemake_command, start_in_background
from tests.messy_data import (
    DECODE_FAILURES,
    GALLERY_EXPECTED,
    I2T_QUERY_EXPECTED,
    PIXEL_LIMIT,
    QUERY_DECODE_FAILURES,
    T2I_QUERY_EXPECTED,
    write_gallery,
    write_messy_contest,
)
from tuwen.clip.architectures import architecture
from tuwen.clip.models import build_model, save_checkpoint
from tuwen.data.ingest import scan_image_folder
from tuwen.files.images import ImageRejected, load_image, probe_image
from tuwen.files.parquet import read_features

CONFIG = {"train": {"enabled": False}, "ingest": {"max_image_pixels": PIXEL_LIMIT}, "shards": {"size": 8}}


def test_every_gallery_case_gets_its_status_and_reason(tmp_path):
    import random

    write_gallery(tmp_path / "g", random.Random(0))
    manifest = scan_image_folder(tmp_path / "g", PIXEL_LIMIT, workers=2, verify_decode=True)
    got = {r.image_id: (r.status, r.reason_code) for r in manifest.itertuples()}
    assert got == GALLERY_EXPECTED
    headers_only = scan_image_folder(tmp_path / "g", PIXEL_LIMIT, workers=2, verify_decode=False)
    got = {r.image_id: (r.status, r.reason_code) for r in headers_only.itertuples()}
    assert got == {**GALLERY_EXPECTED, **{name: ("ok", "") for name in DECODE_FAILURES}}
    bomb = manifest.set_index("image_id").loc["Image-bomb.png", "reason"]
    assert str(PIXEL_LIMIT) in bomb and "6000x4000" in bomb
    formats = manifest.set_index("image_id")["format"]
    assert formats["Image-gif.jpg"] == "GIF" and formats["Image-webp.jpg"] == "WEBP"


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour).convert("P") for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.jpg", format="GIF", save_all=True, append_images=frames[1:])
    image, _ = load_image(tmp_path / "a.jpg", None)
    assert image.getpixel((4, 4))[0] > 200 and image.getpixel((4, 4))[2] < 50


@pytest.mark.parametrize("mode", ["P", "LA", "CMYK", "L", "RGBA"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    image_format = "JPEG" if mode in ("CMYK", "L") else "PNG"
    Image.new("RGB", (8, 8), (10, 200, 30)).convert(mode).save(tmp_path / "m.img", format=image_format)
    image, _ = load_image(tmp_path / "m.img", None)
    assert image.mode == "RGB" and image.size == (8, 8)


def test_a_file_that_cannot_be_read_is_rejected(tmp_path, monkeypatch):
    # Tests run as root, whom file permissions do not stop: make the read itself fail.
    path = tmp_path / "locked.jpg"
    Image.new("RGB", (8, 8)).save(path, format="JPEG")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ImageRejected) as error:
        probe_image(path, None)
    assert error.value.code == "unreadable" and "permission denied" in error.value.message


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory) -> tuple[Path, Path]:
    data = tmp_path_factory.mktemp("messy") / "contest"
    write_messy_contest(data)
    workdir = tmp_path_factory.mktemp("messy-run")
    snakemake(workdir, config={"data_root": str(data), **CONFIG})
    return data, workdir


def test_no_gallery_file_is_lost(messy_run):
    data, workdir = messy_run
    rejects = pd.read_csv(workdir / "results/manifest/t2i_gallery/rejects.csv")
    not_encoded = pd.read_csv(workdir / "results/summary/not_encoded.csv")
    not_encoded = not_encoded[not_encoded["collection"] == "t2i_gallery"]
    encoded = {
        i
        for p in (workdir / "results/features").glob("*/t2i_gallery/*.parquet")
        for i in read_features(p).ids
    }
    names = set(os.listdir(data / "附件2/ImageData"))
    reported = [encoded, set(rejects["id"]), set(not_encoded["id"])]
    assert set.union(*reported) == names and sum(map(len, reported)) == len(names)
    ok = {name for name, (status, _) in GALLERY_EXPECTED.items() if status == "ok"}
    assert encoded == ok
    reasons = dict(zip(rejects["id"], rejects["reason_code"], strict=True))
    expected = {n: code for n, (status, code) in GALLERY_EXPECTED.items() if status != "ok"}
    assert reasons == {n: code for n, code in expected.items() if n not in DECODE_FAILURES}
    assert dict(zip(not_encoded["id"], not_encoded["reason_code"], strict=True)) == DECODE_FAILURES
    assert rejects["reason"].str.len().gt(20).all()
    assert not_encoded["reason"].str.contains("Image-truncated.jpg").all()


def test_query_rows_are_answered_or_rejected_by_row(messy_run):
    _, workdir = messy_run
    for manifest, table, expected in (
        ("manifest/t2i_queries/texts.parquet", "result1.csv", T2I_QUERY_EXPECTED),
        ("query_lists/i2t/queries.parquet", "result2.csv", I2T_QUERY_EXPECTED),
    ):
        rows = pd.read_parquet(workdir / "results" / manifest)
        assert dict(zip(rows["row"], rows["reason_code"], strict=True)) == expected
        answered = pd.read_csv(workdir / "results" / table)
        ok_ids = [i for i in rows.loc[rows["status"] == "ok"].iloc[:, 0] if i not in QUERY_DECODE_FAILURES]
        assert answered.iloc[::5, 0].tolist() == ok_ids
        assert answered.groupby(answered.columns[0]).size().eq(5).all()
    rejects = pd.read_csv(workdir / "results/manifest/t2i_queries/rejects.csv")
    assert rejects["source_file"].str.endswith("word_test.csv").all() and set(rejects["row"]) == {3, 4, 5, 7}
    unencoded = pd.read_csv(workdir / "results/retrieval/i2t/unencoded_queries.csv")
    assert dict(zip(unencoded["id"], unencoded["reason_code"], strict=True)) == QUERY_DECODE_FAILURES


def test_accounting_and_truncated_captions(messy_run):
    _, workdir = messy_run
    accounting = pd.read_csv(workdir / "results/summary/accounting.csv").set_index("collection")
    assert (
        accounting["inputs"] == accounting["accepted"] + accounting["rejected"] + accounting["ignored"]
    ).all()
    encoded = accounting.dropna(subset=["encoded"])
    assert (encoded["encoded"] + encoded["not_encoded"] == encoded["accepted"]).all()
    not_encoded = encoded.loc[encoded["not_encoded"] > 0, "not_encoded"].to_dict()
    assert not_encoded == {"t2i_gallery": 1, "i2t_images": 1, "i2t queries": 1}
    assert accounting.loc["t2i_queries", "truncated_captions"] == 1
    assert accounting.loc["train_texts", "reasons"] == "image_missing=1; image_rejected=1"
    assert accounting.loc["train_images", "reasons"] == "undecodable=1"
    queries = pd.read_parquet(workdir / "results/manifest/t2i_queries/texts.parquet")
    long_row = queries.set_index("text_id").loc["Word-7"]
    assert long_row["status"] == "ok" and long_row["truncated"]
    assert "run summary" in (workdir / "results/logs/account_inputs.log").read_text()


@pytest.mark.slow
def test_killed_encoding_reruns_to_byte_identical_tables(messy_run, tmp_path):
    data, reference = messy_run
    workdir = tmp_path / "run"
    process = start_in_background(snakemake_command(workdir, config={"data_root": str(data), **CONFIG}))
    logs = workdir / "results/logs/encode"
    kill_when(process, lambda: logs.exists() and any(logs.rglob("*.log")))
    assert not (workdir / "results/result1.csv").exists()
    for path in (workdir / "results").rglob("*.parquet"):
        pq.read_metadata(path)  # every file under its final name is complete

    snakemake(workdir, "--unlock", config={"data_root": str(data), **CONFIG})
    snakemake(workdir, config={"data_root": str(data), **CONFIG})
    for table in ("result1.csv", "result2.csv"):
        assert (workdir / "results" / table).read_bytes() == (reference / "results" / table).read_bytes()


def test_missing_column_stops_with_the_columns_found(tmp_path):
    data = tmp_path / "contest"
    write_messy_contest(data)
    (data / "附件3/word_data.csv").write_text("text_id,text\nWord-1,你好\n", encoding="utf-8")
    result = snakemake(
        tmp_path / "run",
        "results/manifest/i2t_gallery/texts.parquet",
        check=False,
        config={"data_root": str(data), **CONFIG},
    )
    assert result.returncode != 0
    # Stopped while the run is declared, before any job, naming the key, the file and the columns.
    assert "collections.i2t_gallery.texts: " in result.stderr
    assert "word_data.csv has no column 'caption' (columns: text_id, text)" in result.stderr
    assert not (tmp_path / "run/results/manifest").exists()


def test_checkpoint_of_another_architecture_stops_early(tmp_path):
    data = tmp_path / "contest"
    write_messy_contest(data)
    vit = architecture("tuwen-tiny")
    save_checkpoint(build_model(vit, 0), tmp_path / "vit.pt", vit)
    result = snakemake(
        tmp_path / "run",
        "results/models/tuwen-tiny-rn/base/model.json",
        check=False,
        config={
            "data_root": str(data),
            "models": [{"name": "tuwen-tiny-rn", "checkpoint": str(tmp_path / "vit.pt")}],
            **CONFIG,
        },
    )
    assert result.returncode != 0 and "does not fit architecture tuwen-tiny-rn" in result.stderr
