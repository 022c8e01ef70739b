"""The browse page: real data in a real headless browser, paging, filtering, and hostile captions."""

from __future__ import annotations

import html.parser
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import contest_positives
from tuwen.report.browse import data_script, make_thumbnails, page_data, write_page


@pytest.fixture(scope="module")
def browser(chromium) -> str:
    return chromium


class PageDom(html.parser.HTMLParser):
    """The rendered DOM: each query section with its hits, and every element's tag and attributes."""

    def __init__(self):
        super().__init__()
        self.sections: list[dict] = []
        self.elements: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        classes = (attributes.get("class") or "").split()
        if tag == "section" and "query" in classes:
            self.sections.append({"id": attributes["data-id"], "hits": [], "correct": []})
        if tag == "li" and "hit" in classes:
            self.sections[-1]["hits"].append(attributes["data-id"])
            if "correct" in classes:
                self.sections[-1]["correct"].append(attributes["data-id"])
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        self.texts.append(data)
        if self._in_title:
            self.title += data


def open_page(browser: str, page: Path, fragment: str = "") -> PageDom:
    """Load the page from disk in headless Chromium, run its script, and parse the resulting DOM."""
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri() + (f"#{fragment}" if fragment else ""),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = PageDom()
    dom.feed(result.stdout)
    return dom


def test_data_script_never_contains_markup():
    script = data_script({"caption": "</script><script>alert(1)</script> <!-- \u2028"})
    assert "<" not in script and "\u2028" not in script
    assert script.startswith("window.TUWEN_BROWSE = {")


def test_thumbnails_are_made_once_per_image_content(tmp_path):
    for name, colour in (("a.jpg", "red"), ("b.jpg", "red"), ("c.png", "blue")):
        Image.new("RGB", (300, 200), colour).save(tmp_path / name)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    images = pd.DataFrame(
        {
            "path": [str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.png", "broken.jpg")],
            "digest": ["d-red", "d-red", "d-blue", "d-broken"],
        }
    )
    made = make_thumbnails(images, tmp_path / "thumbs", 64)
    assert set(made) == {"d-red", "d-blue"}  # the undecodable file gets none, and no error
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "thumbs").iterdir()}
    assert len(first) == 2 and Image.open(tmp_path / "thumbs" / made["d-red"]).size == (64, 43)
    assert make_thumbnails(images, tmp_path / "thumbs", 64) == made
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "thumbs").iterdir()} == first


def test_known_queries_show_their_known_hits_in_a_real_browser(demo_run, browser, tmp_path):
    page = demo_run / "results/browse/index.html"
    truth = demo_run / "results/demo/data/ground_truth.csv"
    for task in ("t2i", "i2t"):
        topk = pd.read_parquet(demo_run / f"results/retrieval/{task}/topk.parquet")
        positives = contest_positives(truth, task, tmp_path)
        query = topk["query_id"].iloc[len(topk) // 2]
        dom = open_page(browser, page, f"task={task}&q={query}")
        [section] = [s for s in dom.sections if s["id"] == query]
        expected = topk[topk["query_id"] == query].sort_values("rank")["target_id"].head(5).tolist()
        assert section["hits"] == expected
        assert section["correct"] == [t for t in expected if t in positives[query]]
        # Unfiltered: the first page holds every query of this small run, each marked as truth says.
        everything = open_page(browser, page, f"task={task}")
        assert len(everything.sections) == topk["query_id"].nunique()
        for shown in everything.sections:
            assert shown["correct"] == [t for t in shown["hits"] if t in positives[shown["id"]]]
    screenshot = tmp_path / "browse.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--window-size=1280,900", f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert Image.open(screenshot).size == (1280, 900)


HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "</script><script>document.title='pwned'</script>",
    "<img src=x onerror=\"document.title='pwned'\">",
    "<b>粗体</b> & &amp; \u2028 end",
]


def hostile_page(folder: Path, queries: int = 120) -> Path:
    """A page of `queries` text queries whose captions and ids include markup and script."""
    ids = [f"Word-{i:04d}" for i in range(queries)]
    captions = pd.Series({q: HOSTILE[i % len(HOSTILE)] + f" 第{i}条" for i, q in enumerate(ids)})
    captions["Word-0001"] = "红色的猫"
    rows = [(q, r, f"Image-{(i + r) % 7}.jpg", 0.9 - r / 100) for i, q in enumerate(ids) for r in range(1, 6)]
    topk = pd.DataFrame(rows, columns=["query_id", "rank", "target_id", "cosine"])
    topk.loc[0, "target_id"] = "<img src=x onerror=alert(1)>.jpg"
    data = page_data({"t2i": topk}, {"t2i": captions}, {"t2i": pd.Series(dtype=str)}, {}, {}, 5)
    write_page(data, folder)
    return folder / "index.html"


def test_hostile_captions_and_ids_show_as_text_and_run_nothing(browser, tmp_path):
    dom = open_page(browser, hostile_page(tmp_path), "task=t2i")
    assert dom.title == "tuwen 图文检索结果"
    assert not [
        attrs for tag, attrs in dom.elements if tag in {"img", "script", "b"} and attrs.get("src") == "x"
    ]
    assert not [tag for tag, _ in dom.elements if tag == "b"]
    shown = "".join(dom.texts)
    for caption in HOSTILE:
        assert caption.replace("\u2028", "") in shown.replace("\u2028", "")
    assert "<img src=x onerror=alert(1)>.jpg" in shown


def test_paging_and_filter(browser, tmp_path):
    page = hostile_page(tmp_path)
    first = open_page(browser, page, "task=t2i")
    assert [s["id"] for s in first.sections] == [f"Word-{i:04d}" for i in range(50)]
    last = open_page(browser, page, "task=t2i&page=3")
    assert [s["id"] for s in last.sections] == [f"Word-{i:04d}" for i in range(100, 120)]
    assert "第 3 / 3 页" in "".join(last.texts)
    by_text = open_page(browser, page, "task=t2i&q=红色")
    assert [s["id"] for s in by_text.sections] == ["Word-0001"]
    by_id = open_page(browser, page, "task=t2i&q=word-011")
    assert [s["id"] for s in by_id.sections] == [f"Word-{i:04d}" for i in range(110, 120)]


def fused_topk() -> tuple[pd.DataFrame, dict]:
    """A fused top-k of two queries as fused_search writes it, and its chosen setting."""
    setting = {"weights": {"clip:m": 1.0, "ocr": 0.5}, "temperature": 0.05}
    rows = []
    for q in ("Word-1", "Word-2"):
        for rank in range(1, 6):
            clip, ocr = 0.5 - rank / 50, (rank % 2) / 2
            fused = clip + 0.5 * ocr
            rows.append((q, rank, f"Image-{rank}.jpg", fused - 0.1 * rank, fused, clip, 0.1, clip, ocr))
    columns = ["query_id", "rank", "target_id", "score", "fused", "cosine", "probability"]
    return pd.DataFrame(rows, columns=[*columns, "score_clip_m", "score_ocr"]), setting


def test_a_fused_hit_shows_the_score_that_ranks_and_its_parts():
    topk, setting = fused_topk()
    data = page_data(
        {"t2i": topk},
        {"t2i": pd.Series({"Word-1": "猫", "Word-2": "狗"})},
        {"t2i": pd.Series(dtype=str)},
        {},
        {},
        5,
        {"t2i": setting},
    )
    hits = [hit for query in data["tasks"]["t2i"]["queries"] for hit in query["hits"]]
    assert [hit["score"] for hit in hits] == [round(s, 4) for s in topk["score"]]
    for hit, row in zip(hits, topk.itertuples(index=False), strict=True):
        assert [name for name, _ in hit["parts"]] == ["clip:m", "ocr", "rerank"]
        assert sum(value for _, value in hit["parts"]) == pytest.approx(row.score, abs=2e-4)
        assert hit["cosine"] == round(row.cosine, 4)
    # Without fusion the cosine ranks, and no parts are shown.
    plain = page_data(
        {"t2i": topk.drop(columns=["score"])},
        {"t2i": pd.Series(dtype=str)},
        {"t2i": pd.Series(dtype=str)},
        {},
        {},
        5,
    )
    assert all(
        h["score"] == h["cosine"] and "parts" not in h
        for q in plain["tasks"]["t2i"]["queries"]
        for h in q["hits"]
    )


def test_the_page_shows_fused_scores_in_a_real_browser(browser, tmp_path):
    topk, setting = fused_topk()
    captions = pd.Series({"Word-1": "猫", "Word-2": "狗"})
    write_page(
        page_data(
            {"t2i": topk}, {"t2i": captions}, {"t2i": pd.Series(dtype=str)}, {}, {}, 5, {"t2i": setting}
        ),
        tmp_path,
    )
    dom = open_page(browser, tmp_path / "index.html", "task=t2i")
    scores = [
        attrs["data-score"] for tag, attrs in dom.elements if tag == "li" and "hit" in attrs.get("class", "")
    ]
    assert scores == [f"{s:.4f}" for s in topk["score"]]
    shown = "".join(dom.texts)
    assert "分项" in shown and "clip:m +" in shown and "rerank -" in shown
