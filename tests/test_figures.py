"""Figures set Chinese in a real CJK font: no tofu boxes."""

import random

import pytest
from PIL import Image

from tuwen.data.demo import ALL_SCENES, draw_scene
from tuwen.report.figures import (
    ShownHit,
    image_to_text_figure,
    placeholder_figure,
    sample_queries,
    save_figure,
    text_to_image_figure,
)

CHINESE = "左上角有一个红色的圆形，画面中间是蓝色的星形《绿色北京》"


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"Image-{i}.jpg"
        draw_scene(ALL_SCENES[i], random.Random(i)).save(path, format="JPEG")
        paths.append(str(path))
    return paths


def test_text_to_image_figure_renders_chinese_without_missing_glyphs(tmp_path, images):
    hits = [ShownHit(i + 1, f"Image-{i}.jpg", 0.9 - i / 10, 0.2, image_path=p) for i, p in enumerate(images)]
    missing = save_figure(text_to_image_figure(CHINESE, "Word-1", hits, "余弦"), tmp_path / "t2i.png")
    assert missing == []
    assert Image.open(tmp_path / "t2i.png").size[0] > 500


def test_image_to_text_figure_renders_chinese_without_missing_glyphs(tmp_path, images):
    hits = [ShownHit(i + 1, f"Word-{i}", 0.5, 0.1, caption=CHINESE[i:]) for i in range(5)]
    missing = save_figure(
        image_to_text_figure(images[0], "Image-0.jpg", hits, "融合得分"), tmp_path / "i2t.png"
    )
    assert missing == []


def test_a_glyph_the_font_lacks_is_reported(tmp_path):
    # U+10FFFD is a private-use code point no font covers: the check must notice it.
    missing = save_figure(placeholder_figure("中文 \U0010fffd"), tmp_path / "x.png")
    assert missing and "missing from" in missing[0]


def test_query_sample_is_seeded_and_keeps_order():
    ids = [f"q{i}" for i in range(50)]
    chosen = sample_queries(ids, 4, seed=0)
    assert chosen == sample_queries(ids, 4, seed=0) and chosen == sorted(chosen, key=ids.index)
    assert sample_queries(ids[:2], 4, seed=0) == ["q0", "q1"]
