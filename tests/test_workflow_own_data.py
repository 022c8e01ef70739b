"""Your own data, declared: a photo library, a query list against a folder, own training pairs.

The README's three layouts (examples/*.yaml), run through the workflow on folders these
tests make: nested folders, several formats, a file that is not an image and one that
cannot be read, none of which is lost without a reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

import tuwen.files.images  # noqa: F401  (registers the HEIC/AVIF writers the library's photos need)
from tests.conftest import REPO, planned_jobs, snakemake
from tuwen.run.declaration import TEXTS

pytestmark = pytest.mark.slow

COLOURS = {"红色": (220, 30, 30), "绿色": (30, 200, 60), "蓝色": (30, 60, 220), "黄色": (230, 220, 40)}
SHAPES = ("圆形", "方形")
SMALL = {"models": ["tuwen-tiny-rn"], "figures": {"queries_per_task": 1}}


def example(name: str, **overrides) -> dict:
    declared = yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text(encoding="utf-8"))
    return {**declared, **SMALL, **overrides}


def draw(path: Path, colour: str, shape: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 60, 3)))
    box = [
        int(v) for v in (rng.integers(4, 16), rng.integers(4, 16), rng.integers(40, 60), rng.integers(40, 60))
    ]
    from PIL import ImageDraw

    pen = ImageDraw.Draw(image)
    (pen.ellipse if shape == "圆形" else pen.rectangle)(box, fill=COLOURS[colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    formats = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF"}
    formats.update({".heic": "HEIF", ".avif": "AVIF"})
    image.save(path, formats[path.suffix])


def make_library(root: Path, count: int, start: int = 0, folder: str = "") -> list[tuple[str, str]]:
    """Photos in nested folders of several formats; give (relative path, caption) of each."""
    made = []
    for i in range(start, start + count):
        colour, shape = list(COLOURS)[i % 4], SHAPES[(i // 4) % 2]
        relative = f"{folder or f'{2023 + i % 2}/{i % 3:02d}'}/p{i}{('.jpg', '.png', '.webp', '.gif')[i % 4]}"
        draw(root / relative, colour, shape, i)
        made.append((relative, f"一个{colour}的{shape}"))
    return made


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("library")
    make_library(root, 24)
    # Two photos of one name in two folders, a note and a file that is no image.
    draw(root / "2024/02/p0.jpg", "红色", "圆形", 99)
    (root / "2024/readme.txt").write_text("not a photo", encoding="utf-8")
    (root / "2024/01/broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    # Phone photos.
    draw(root / "2024/phone/IMG_0001.heic", "绿色", "方形", 7)
    draw(root / "2024/phone/IMG_0002.avif", "蓝色", "圆形", 8)
    return root


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory, library) -> Path:
    run = tmp_path_factory.mktemp("photos")
    snakemake(run, config=example("photos", data_root=str(library)))
    return run


def test_a_photo_library_is_ingested_encoded_and_browsable(photo_run, library):
    manifest = pd.read_parquet(photo_run / "results/manifest/photos/images.parquet")
    listed = set(manifest["image_id"])
    on_disk = {p.relative_to(library).as_posix() for p in library.rglob("*") if p.is_file()}
    assert listed == on_disk  # every file has a row: nothing is dropped silently
    assert {"2023/00/p0.jpg", "2024/02/p0.jpg", "2024/00/p3.gif", "2023/01/p4.jpg"} <= listed
    rejects = pd.read_csv(photo_run / "results/manifest/photos/rejects.csv")
    reasons = dict(zip(rejects["id"], rejects["reason_code"], strict=True))
    assert reasons == {"2024/readme.txt": "not_image_file", "2024/01/broken.jpg": "not_an_image"}
    accounting = pd.read_csv(photo_run / "results/summary/accounting.csv").set_index("collection")
    assert accounting.loc["photos", "accepted"] == 27 == accounting.loc["photos", "encoded"]
    assert {"2024/phone/IMG_0001.heic", "2024/phone/IMG_0002.avif"} <= set(
        manifest.loc[manifest["status"] == "ok", "image_id"]
    )
    page = (photo_run / "results/browse/data.js").read_text(encoding="utf-8")
    assert "collection-photos" in page and "2023/00/p0.jpg" in page
    # The default model is random-initialised and nothing fine-tunes it: the page says so.
    assert '"notice":"the ranking model tuwen-tiny-rn has random weights' in page
    assert not (photo_run / "results/result1.csv").exists()


def test_the_server_answers_a_chinese_query_and_more_like_this(photo_run):
    from tuwen.serve.loaded_run import LoadedRun

    index = LoadedRun.open(photo_run)
    assert [g["name"] for g in index.galleries()] == ["photos"] and index.default_gallery(TEXTS) == "photos"
    answer = index.search(index.text_query("一个红色的圆形", "photos"), "photos", 5)
    assert len(answer["hits"]) == 5 and answer["ranked_by"] == "cosine"
    assert "random weights" in answer["warning"] and "models: [ViT-B-16]" in answer["warning"]
    like = index.search(index.item_query("photos", "2024/00/p3.gif"), "photos", 3)
    # The photo itself is its own nearest neighbour, at cosine 1.
    assert like["hits"][0]["id"] == "2024/00/p3.gif" and like["hits"][0]["cosine"] == pytest.approx(
        1, abs=1e-5
    )


def test_ten_more_photos_rerun_only_their_shard(photo_run, library, tmp_path_factory):
    import shutil

    run = tmp_path_factory.mktemp("photos-grown")
    shutil.copytree(photo_run, run, dirs_exist_ok=True, symlinks=True)
    grown = tmp_path_factory.mktemp("library-grown")
    shutil.copytree(library, grown, dirs_exist_ok=True)
    config = example("photos", data_root=str(grown))
    snakemake(run, config=config)  # the same photos under another folder: read again, not encoded
    make_library(grown, 10, start=100, folder="2024/new")
    dry = snakemake(run, "-n", config=config)
    encodes = [w for rule, w in planned_jobs(dry.stdout) if rule == "encode_image_shard"]
    assert len(encodes) <= 1, encodes
    snakemake(run, config=config)
    shards = sorted((run / "results/shards/photos/lists").glob("*.parquet"))
    assert len(shards) == 2 and len(pd.read_parquet(shards[-1])) == 10


def test_a_query_list_and_own_training_pairs(tmp_path):
    root = tmp_path / "data"
    made = make_library(root / "photos", 40)
    queries = pd.DataFrame({"编号": [f"Q{i}" for i in range(6)], "问题": [c for _, c in made[:6]]})
    queries.to_csv(root / "questions.csv", index=False)
    pd.DataFrame(made, columns=["path", "caption"]).to_csv(root / "pairs.tsv", sep="\t", index=False)
    declared = example("queries", data_root=str(root))
    declared["training"] = example("training")["training"]
    run = tmp_path / "run"
    snakemake(run, config={**declared, "train": {"epochs": 2, "batch_size": 16, "val_fraction": 0.25}})
    table = pd.read_csv(run / "results/find.csv")
    assert list(table.columns) == ["问题编号", "名次", "图片"]
    assert table.groupby("问题编号").size().eq(20).all() and list(table["问题编号"].unique()) == list(
        queries["编号"]
    )
    assert set(table["图片"]) <= {p for p, _ in made}
    metrics = json.loads((run / "results/models/tuwen-tiny-rn/finetune/val_metrics.json").read_text())
    # Every pair is trained on or held out for validation recall, reported before and after each epoch.
    assert (
        metrics["train_pairs"] + metrics["validation_pairs"] == len(made) and metrics["validation_pairs"] > 0
    )
    assert len(metrics["epochs"]) == 2 and {"t2i", "i2t"} <= set(metrics["before"])
    card = json.loads((run / "results/models/tuwen-tiny-rn/finetune/model.json").read_text())
    features = list((run / "results/features" / card["tag"] / "photos").glob("*.parquet"))
    assert features  # the photos are ranked with the fine-tuned model


def test_duplicates_of_a_library_are_grouped_served_and_found_again_only_for_new_shards(tmp_path, chromium):
    from playwright.sync_api import sync_playwright

    from tests.dataset_formats import photo, plant_copies
    from tests.test_serve import Server

    library = tmp_path / "library"
    library.mkdir()
    originals = {f"p{n:03d}.jpg": photo(n) for n in range(30)}
    for name, picture in originals.items():
        picture.save(library / name, quality=92)
    planted = plant_copies(library, originals)
    run = tmp_path / "run"
    config = example("photos", data_root=str(library), shards={"size": 20})
    snakemake(run, config=config)
    groups = pd.read_csv(run / "results/duplicates/photos.csv")
    found = {frozenset(g["id"]) for _, g in groups.groupby("group")}
    assert found == {frozenset(pair) for pair in planted.items()}
    server = Server(run)
    try:
        status, answer = server.get("/api/duplicates", gallery="photos")
        assert status == 200 and len(answer["groups"]) == len(planted)
        kinds = {item["id"]: item["kind"] for group in answer["groups"] for item in group["items"]}
        assert kinds["copies/cropped.jpg"] == "near" and kinds["p002.jpg"] == "first"
        assert server.get("/api/duplicates", gallery="nowhere")[0] == 404
        # The search page shows the same groups, each photo with how it relates to the first.
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(server.base + "/")
            page.wait_for_function("document.body.dataset.ready === 'true'")
            page.click("#duplicates")
            page.wait_for_function("document.body.dataset.answered !== undefined", timeout=30000)
            assert page.locator("li.group").count() == len(planted)
            shown = page.locator("li.group img").evaluate_all("images => images.map(i => i.alt)")
            assert sorted(shown) == sorted(kinds)
            browser.close()
    finally:
        server.stop()
    # One more copy in a new shard: the earlier shards' hashes and pairs are not made again.
    before = {p: p.stat().st_mtime_ns for p in (run / "results/duplicates/photos").glob("*.parquet")}
    originals["p010.jpg"].resize((200, 150)).save(library / "copies/later.jpg", quality=90)
    snakemake(run, config=config)
    after = {p: p.stat().st_mtime_ns for p in (run / "results/duplicates/photos").glob("*.parquet")}
    assert all(after[p] == mtime for p, mtime in before.items()) and len(after) == len(before) + 2
    groups = pd.read_csv(run / "results/duplicates/photos.csv")
    assert set(groups.loc[groups["first"] == "p010.jpg", "id"]) == {"p010.jpg", "copies/later.jpg"}


def test_a_library_is_tagged_and_filtered_by_tag_folder_date_and_format(tmp_path, library):
    """examples/tags.yaml on the library with a labels file beside the photos and EXIF dates
    in some: every photo it encoded has its best labels, and a search filtered by tag, folder,
    date or format answers with exactly the photos the tags table and the manifest name."""
    import shutil

    root = tmp_path / "library"
    shutil.copytree(library, root)
    (root / "labels.txt").write_text("\n".join([*COLOURS, *SHAPES]) + "\n", encoding="utf-8")
    dated = {"2023/00/p0.jpg": "2019:03:04 08:00:00", "2023/01/p4.jpg": "2021:06:15 10:00:00"}
    for relative, stamp in dated.items():
        picture = Image.open(root / relative)
        exif = Image.Exif()
        exif.get_ifd(0x8769)[36867] = stamp  # DateTimeOriginal
        picture.save(root / relative, exif=exif)
    run = tmp_path / "run"
    prompts = {"labels": "labels.txt", "templates": ["一个{}"]}
    snakemake(run, config=example("tags", data_root=str(root), tags=prompts))
    tags = pd.read_csv(run / "results/tags/photos.csv", dtype={"id": str})
    current = pd.read_parquet(run / "results/shards/photos/assignment.parquet")
    assert set(tags["id"]) == set(current["id"]) and tags.groupby("id").size().eq(3).all()
    assert set(tags["label"]) <= {*COLOURS, *SHAPES}
    manifest = pd.read_parquet(run / "results/manifest/photos/images.parquet").set_index("image_id")
    manifest = manifest[manifest.index.isin(current["id"])]
    assert manifest.loc["2023/00/p0.jpg", "taken"] == "2019-03-04T08:00:00"
    assert manifest["taken"].notna().sum() == 2

    def found(*options: str) -> set[str]:
        command = ["search", "一个红色的圆形", "--run", str(run), "--top", "50", *options]
        result = subprocess.run(
            [sys.executable, "-m", "tuwen", *command], capture_output=True, text=True, cwd=REPO, timeout=300
        )
        assert result.returncode == 0, result.stderr
        return {line.split("\t")[3] for line in result.stdout.strip().splitlines()}

    label = tags[tags["rank"] == 1]["label"].iloc[0]
    assert found("--tag", label) == set(tags[tags["label"] == label]["id"])
    assert found("--prefix", "2023/") == {i for i in manifest.index if i.startswith("2023/")}
    assert found("--format", "png") == set(manifest.index[manifest["format"] == "PNG"])
    # The dated photos by their EXIF date; every other photo by its file's time (today).
    assert found("--before", "2020-12-31") == {"2023/00/p0.jpg"}
    said = subprocess.run(
        [sys.executable, "-m", "tuwen", "search", "猫", "--run", str(run), "--before", "2020-12-31"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert "among 1 photos (before=2020-12-31)" in said.stderr
    assert found("--after", "2019-03-04", "--before", "2021-06-15") == set(dated)
    assert len(found("--after", "2022-01-01")) == len(manifest) - 2
    bad = subprocess.run(
        [sys.executable, "-m", "tuwen", "search", "猫", "--run", str(run), "--after", "2024-13-01"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "after must be a date YYYY-MM-DD, got '2024-13-01'" in bad.stderr


def test_a_word_printed_in_a_photo_finds_it_by_keyword_and_meaning(tmp_path, library, chromium):
    """examples/tags.yaml reads the text in the photos: a query for the words printed in one
    photo ranks it first (found by the keyword list and the model's), a folder filter still
    narrows the answer, and a run that reads no text says how to turn keyword search on."""
    import shutil

    from PIL import ImageDraw, ImageFont

    from tuwen.report.figures import cjk_font_path
    from tuwen.serve.loaded_run import HYBRID, LoadedRun, QueryError

    root = tmp_path / "library"
    shutil.copytree(library, root)
    (root / "labels.txt").write_text("\n".join(COLOURS) + "\n", encoding="utf-8")
    signs = {"signs/breakfast.jpg": "豆浆油条", "signs/dinner.png": "四川火锅", "signs/cafe.jpg": "咖啡外卖"}
    font = ImageFont.truetype(cjk_font_path(), 48)
    for relative, words in signs.items():
        picture = Image.new("RGB", (480, 160), "white")
        ImageDraw.Draw(picture).text((20, 50), words, fill="black", font=font)
        (root / relative).parent.mkdir(exist_ok=True)
        picture.save(root / relative)
    run = tmp_path / "run"
    snakemake(run, config=example("tags", data_root=str(root)))
    read = pd.concat(pd.read_parquet(p) for p in (run / "results/ocr/photos").glob("*.parquet"))
    texts = dict(zip(read["id"], read["text"].str.replace(" ", ""), strict=True))
    assert all(words in texts[relative] for relative, words in signs.items()), texts

    loaded = LoadedRun.open(run)
    assert HYBRID in loaded.galleries()[0]["by"]
    for relative, words in signs.items():
        answer = loaded.search(loaded.text_query(words, "photos"), "photos", 5)
        assert answer["ranked_by"] == HYBRID
        best = answer["hits"][0]
        assert best["id"] == relative and best["found_by"]["ocr"] == 1
        assert set(best["found_by"]) == {"ocr", loaded.finished.default_channel}
        assert sum(value for _, value in best["parts"]) == pytest.approx(best["score"], abs=1e-5)
        # The other sign photos share no character with the query: the model alone found them.
        for hit in answer["hits"][1:]:
            assert "ocr" not in hit["found_by"]
    # By the model alone, the same query is ranked as before: by cosine.
    alone = loaded.search(
        loaded.text_query("豆浆油条", "photos"), "photos", 5, by=loaded.finished.default_channel
    )
    assert alone["ranked_by"] == "cosine" and "found_by" not in alone["hits"][0]
    from tuwen.serve.loaded_run import Filters

    elsewhere = loaded.search(
        loaded.text_query("豆浆油条", "photos"), "photos", 50, filters=Filters(prefix="2023/")
    )
    assert elsewhere["hits"] and all(hit["id"].startswith("2023/") for hit in elsewhere["hits"])
    with pytest.raises(QueryError, match="ranks a text query"):
        loaded.scoring("images", "photos", HYBRID)
    # The command line ranks the same way and says which lists found each hit.
    result = subprocess.run(
        [sys.executable, "-m", "tuwen", "search", "四川火锅", "--run", str(run), "--top", "3"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0].split("\t")
    assert first[3] == "signs/dinner.png" and "ocr#1" in first[-1] and "by hybrid" in result.stderr
    # The search page offers the ranking and shows which lists found a hit.
    from playwright.sync_api import sync_playwright

    from tests.test_serve import Server, wait_for_answer

    server = Server(run)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(server.base + "/?" + urllib.parse.urlencode({"q": "四川火锅"}))
            wait_for_answer(page, None)
            assert HYBRID in page.locator("#by option").evaluate_all("options => options.map(o => o.value)")
            best = page.locator("li.hit").first
            assert best.get_attribute("data-id") == "signs/dinner.png"
            best.locator("details.parts summary").click()
            assert "ocr (#1)" in best.locator("details.parts").inner_text()
            browser.close()
    finally:
        server.stop()
    # Exported to Milvus, the text read is a BM25 field of Milvus's own full-text search, and
    # the server's keyword list comes from it.
    from tuwen.export.milvus import export_milvus, milvus_client

    uri = str(tmp_path / "photos.db")
    export_milvus(run, uri)
    fields = {field["name"] for field in milvus_client(uri).describe_collection("tuwen_photos")["fields"]}
    assert {"ocr", "ocr_sparse"} <= fields
    served = LoadedRun.open(run, milvus=uri)
    for relative, words in signs.items():
        answer = served.search(served.text_query(words, "photos"), "photos", 5)
        assert answer["search"]["keywords"] == "Milvus BM25 (tuwen_photos.ocr_sparse)"
        assert answer["hits"][0]["id"] == relative and answer["hits"][0]["found_by"]["ocr"] == 1


def test_a_run_that_reads_no_text_in_its_photos_refuses_keyword_search(photo_run):
    from tuwen.serve.loaded_run import HYBRID, LoadedRun, QueryError

    loaded = LoadedRun.open(photo_run)
    assert HYBRID not in loaded.galleries()[0]["by"]
    with pytest.raises(QueryError, match="keywords.enabled: true"):
        loaded.text_query("豆浆油条", "photos", HYBRID)
