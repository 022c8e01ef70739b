"""`python -m tuwen serve`: a real server process over a finished run, its JSON API both ways
against the run's own tables, hostile input, concurrent clients, and its page in a real
headless Chromium (typing, uploading, clicking)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tuwen.ranking.recall import read_positives
from tuwen.run import layout
from tuwen.run.declaration import IMAGES, TEXTS, contest_ground_truth


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `python -m tuwen serve` process on a free port, and plain HTTP calls to it."""

    def __init__(self, run: Path, *extra: str, start_s: float = 120):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tuwen", "serve", "--run", str(run), "--port", str(self.port), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deadline = time.time() + start_s
        while time.time() < deadline:
            assert self.process.poll() is None, f"the server ended: {self.process.stdout.read()}"
            try:
                if self.call("GET", "/api/galleries")[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"the server did not answer within {start_s:.0f} s")

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as failure:
            return failure.code, json.loads(failure.read())

    def get(self, path: str, **params):
        return self.call("GET", f"{path}?{urllib.parse.urlencode(params)}" if params else path)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(demo_run):
    running = Server(demo_run)
    yield running
    running.stop()


def run_table(run: Path, task: str) -> pd.DataFrame:
    return pd.read_parquet(run / layout.topk(task))


def multipart(field: str, data: bytes, content_type: str) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="q.jpg"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_text_queries_rank_as_the_run_ranked_them(server, demo_run):
    """A caption typed again gets the run's own top-10, scores equal, ✓ from ground truth."""
    table = run_table(demo_run, "t2i")
    queries = pd.read_parquet(demo_run / layout.manifest("t2i_queries", TEXTS))
    truth = read_positives(
        contest_ground_truth(str(demo_run / layout.demo_data() / "ground_truth.csv"), TEXTS)
    )
    for text_id, caption in queries[["text_id", "caption"]].head(6).itertuples(index=False):
        status, answer = server.get("/api/search", q=caption, gallery="t2i_gallery", k=10)
        assert status == 200, answer
        expected = table[table["query_id"] == text_id].sort_values("rank")
        assert [h["id"] for h in answer["hits"]] == expected["target_id"].tolist()
        assert [h["rank"] for h in answer["hits"]] == list(range(1, 11))
        for hit, cosine in zip(answer["hits"], expected["cosine"], strict=True):
            assert hit["score"] == pytest.approx(float(cosine), abs=1e-5)
            assert hit["image"] == f"/image/t2i_gallery/{hit['id']}"
            assert hit["correct"] == (hit["id"] in truth[text_id])
        assert answer["query"]["id"] == text_id and answer["ranked_by"] == "cosine"
        # The query's encoding is part of the answer's time, and says what encoded it: the
        # run's exact ONNX export on a CPU.
        timing = answer["timing"]
        assert 0 < timing["encode_ms"] <= timing["total_ms"]
        assert timing["total_ms"] == pytest.approx(timing["encode_ms"] + timing["search_ms"], abs=0.01)
        assert set(answer["encoded_by"].values()) == {"onnxruntime"}


def test_image_queries_rank_as_the_run_ranked_them(server, demo_run):
    """An uploaded query image, as the body or as a multipart field, gets the run's top-10."""
    table = run_table(demo_run, "i2t")
    images = pd.read_parquet(demo_run / layout.manifest("i2t_images", IMAGES))
    images = images[images["status"] == "ok"].head(4)
    captions = pd.read_parquet(demo_run / layout.manifest("i2t_gallery", TEXTS)).set_index("text_id")[
        "caption"
    ]
    for position, (image_id, path) in enumerate(images[["image_id", "path"]].itertuples(index=False)):
        data = (demo_run / path).read_bytes()
        if position % 2:
            body, headers = multipart("image", data, "image/jpeg")
        else:
            body, headers = data, {"Content-Type": "image/jpeg"}
        status, answer = server.call("POST", "/api/search?k=10", body, headers)
        assert status == 200, answer
        expected = table[table["query_id"] == image_id].sort_values("rank")
        assert answer["gallery"] == "i2t_gallery"
        assert [h["id"] for h in answer["hits"]] == expected["target_id"].tolist()
        for hit, cosine in zip(answer["hits"], expected["cosine"], strict=True):
            assert hit["score"] == pytest.approx(float(cosine), abs=1e-5)
            assert hit["caption"] == captions[hit["id"]]
        assert answer["query"]["id"] == image_id


def test_more_like_this_starts_from_the_item_itself(server):
    status, answer = server.get("/api/galleries")
    assert {g["name"] for g in answer["galleries"]} >= {"t2i_gallery", "i2t_gallery"}
    status, first = server.get("/api/search", q="蓝色的圆形", gallery="t2i_gallery", k=3)
    item = first["hits"][2]["id"]
    status, answer = server.get("/api/search", like=item, of="t2i_gallery", gallery="t2i_gallery", k=5)
    assert status == 200, answer
    assert answer["hits"][0]["id"] == item and answer["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    scores = [h["score"] for h in answer["hits"]]
    assert scores == sorted(scores, reverse=True)


def bomb_png() -> bytes:
    """A small PNG that declares 30,000 x 30,000 pixels (900 M): a decompression bomb."""
    out = io.BytesIO()
    Image.new("1", (30000, 30000)).save(out, "PNG")
    return out.getvalue()


def oversized_post(server: Server, declared: bool) -> tuple[int, dict]:
    """POST 60 MB of image/jpeg, with its Content-Length or chunked (no length), and give the
    answer; the server may stop reading once it has refused the body, so sending may fail."""
    head = "POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
    head += f"Content-Length: {60 * 1024 * 1024}\r\n" if declared else "Transfer-Encoding: chunked\r\n"
    chunk = b"\xff" * (1024 * 1024)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
        connection.sendall((head + "\r\n").encode())
        try:
            for _ in range(60):
                connection.sendall(chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # refused part-way: the answer is already waiting
        reply = b""
        try:
            while b"}" not in reply:
                part = connection.recv(65536)
                if not part:
                    break
                reply += part
        except OSError:
            pass
    header, _, body = reply.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(body)


def test_an_upload_over_the_limit_gets_its_413_in_a_client_that_sends_it_all_first(server):
    """urllib sends the whole body before it reads the answer: it gets the JSON 413, not a broken pipe."""
    request = urllib.request.Request(
        f"{server.base}/api/search", data=b"\xff" * (30 * 1024 * 1024), headers={"Content-Type": "image/jpeg"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=120)
    assert refused.value.code == 413 and "limit" in json.loads(refused.value.read())["error"]
    status, galleries = server.get("/api/galleries")
    assert status == 200 and galleries["max_body"] == 20 * 1024 * 1024  # what the page refuses early


def test_hostile_input_gets_json_errors_and_the_server_lives(server):
    cases = [
        (server.get("/api/search", q="猫", k=0), 400, "k must be"),
        (server.get("/api/search", q="猫", k="many"), 400, "whole number"),
        (server.get("/api/search", q="   "), 400, "empty"),
        (server.get("/api/search"), 400, "give q=TEXT"),
        (server.get("/api/search", q="猫", gallery="nope"), 404, "no gallery 'nope'"),
        (server.get("/api/search", like="nothing.jpg", of="t2i_gallery"), 400, "no encoded item"),
        (oversized_post(server, declared=True), 413, "limit"),
        (oversized_post(server, declared=False), 413, "limit"),
        (
            server.call("POST", "/api/search", "不是图片".encode() * 100, {"Content-Type": "image/jpeg"}),
            400,
            "not a recognised image",
        ),
        (server.call("POST", "/api/search", b"hello", {"Content-Type": "text/plain"}), 415, "text/plain"),
        (
            server.call("POST", "/api/search", bomb_png(), {"Content-Type": "image/png"}),
            400,
            "decompression-bomb",
        ),
        (
            server.call("POST", "/api/search", *multipart("file", b"abc", "image/jpeg")),
            400,
            "no file field named 'image'",
        ),
        (server.get("/image/t2i_gallery/nothing.jpg"), 404, "no image"),
    ]
    for (status, answer), expected_status, words in cases:
        assert status == expected_status, answer
        assert words in answer["error"], answer
    assert server.get("/api/search", q="红色的三角形")[0] == 200
    assert server.process.poll() is None


def test_concurrent_clients_get_the_answers_one_client_gets(server, demo_run):
    captions = pd.read_parquet(demo_run / layout.manifest("t2i_queries", TEXTS))["caption"].head(8).tolist()
    alone = {c: server.get("/api/search", q=c, k=5)[1]["hits"] for c in captions}

    def client(caption: str) -> list[tuple[int, list]]:
        answers = [server.get("/api/search", q=caption, k=5) for _ in range(10)]
        return [(status, answer.get("hits")) for status, answer in answers]

    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(captions, pool.map(client, captions), strict=True))
    for caption, answers in results.items():
        assert answers == [(200, alone[caption])] * 10


@pytest.fixture(scope="module")
def browser_page(server, chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser.new_page()
        browser.close()


def wait_for_answer(page, before: str | None) -> None:
    page.wait_for_function(
        "previous => document.body.dataset.answered && document.body.dataset.answered !== previous",
        arg=before,
        timeout=30000,
    )


def test_page_types_uploads_and_clicks(server, demo_run, browser_page):
    page = browser_page
    table = run_table(demo_run, "t2i")
    queries = pd.read_parquet(demo_run / layout.manifest("t2i_queries", TEXTS))
    text_id, caption = queries[["text_id", "caption"]].iloc[1]

    # A linked query runs on load.
    page.goto(f"{server.base}/?" + urllib.parse.urlencode({"q": caption, "gallery": "t2i_gallery"}))
    wait_for_answer(page, None)
    expected = table[table["query_id"] == text_id].sort_values("rank")["target_id"].tolist()
    assert page.locator("li.hit").evaluate_all("items => items.map(i => i.dataset.id)") == expected
    assert page.locator("li.hit img.thumb").count() == 10

    # A query typed into the box.
    other_id, other = queries[["text_id", "caption"]].iloc[2]
    before = page.evaluate("document.body.dataset.answered")
    page.fill("#q", other)
    page.click("button[type=submit]")
    wait_for_answer(page, before)
    expected = table[table["query_id"] == other_id].sort_values("rank")["target_id"].tolist()
    assert page.locator("li.hit").evaluate_all("items => items.map(i => i.dataset.id)") == expected
    assert "q=" in page.url

    # A hit clicked: more like this, the hit itself first.
    clicked = page.locator("li.hit").nth(3).get_attribute("data-id")
    before = page.evaluate("document.body.dataset.answered")
    page.locator("li.hit").nth(3).click()
    wait_for_answer(page, before)
    assert page.locator("li.hit").first.get_attribute("data-id") == clicked
    assert "like=" in page.url

    # An image uploaded through the page: the captions of the run's image → text table.
    images = pd.read_parquet(demo_run / layout.manifest("i2t_images", IMAGES))
    image_id, path = images[images["status"] == "ok"][["image_id", "path"]].iloc[0]
    before = page.evaluate("document.body.dataset.answered")
    page.select_option("#gallery", "")
    page.set_input_files("#image", str(demo_run / path))
    wait_for_answer(page, before)
    i2t = run_table(demo_run, "i2t")
    expected = i2t[i2t["query_id"] == image_id].sort_values("rank")["target_id"].tolist()
    assert page.locator("li.hit").evaluate_all("items => items.map(i => i.dataset.id)") == expected
    assert page.locator("li.hit .hit-text").count() == 10


def test_page_shows_markup_as_text(server, browser_page):
    page = browser_page
    hostile = '<img src=x onerror="window.pwned=1"><b>粗体</b>'
    page.goto(f"{server.base}/?" + urllib.parse.urlencode({"q": hostile}))
    wait_for_answer(page, None)
    assert page.evaluate("window.pwned") is None
    assert page.locator("#query img, #query b").count() == 0
    assert page.inner_text("#query .query-text") == hostile


def test_page_filters_by_tag_and_keeps_the_filter_in_the_link(server, demo_run, browser_page):
    """The page's tag filter: only photos with that tag among their best labels, the answer's
    filter said in the query line, and the filter kept in the page's address."""
    tags = pd.read_csv(demo_run / "results/tags/t2i_gallery.csv", dtype={"id": str})
    label = tags["label"].value_counts().index[-1]  # the rarest: a filter that narrows
    tagged = set(tags[tags["label"] == label]["id"])
    page = browser_page
    page.goto(f"{server.base}/?gallery=t2i_gallery")
    page.wait_for_function("document.body.dataset.ready === 'true'")
    assert label in page.locator("#tags option").evaluate_all("options => options.map(o => o.value)")
    before = page.evaluate("document.body.dataset.answered")
    page.fill("#q", "左上角有一个红色的圆形")
    page.fill("#tag", label)
    page.click("button[type=submit]")
    wait_for_answer(page, before)
    shown = page.locator("li.hit").evaluate_all("items => items.map(i => i.dataset.id)")
    assert shown and set(shown) <= tagged and len(shown) == min(10, len(tagged))
    assert f"tag={label}" in page.inner_text("#query .note") and f"{len(tagged)} 张符合" in page.inner_text(
        "#query"
    )
    assert "tag=" in page.url
    page.reload()
    wait_for_answer(page, None)
    assert page.input_value("#tag") == label
    page.fill("#tag", "")
