"""Concurrent queries' texts encoded together (tuwen.serve.batching): each request gets its own
text's embedding, whatever batch it was in."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tuwen.serve.batching import TextBatches


class Recorded:
    """An encoder that records each batch it is given; the first batch waits to be let go."""

    def __init__(self, fail_on: str | None = None):
        self.batches: list[list[str]] = []
        self.first_started = threading.Event()
        self.let_go = threading.Event()
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        if len(self.batches) == 1:
            self.first_started.set()
            assert self.let_go.wait(timeout=30)
        if self.fail_on in texts:
            raise ValueError(f"cannot encode {self.fail_on}")
        return np.array([[float(len(text)), float(sum(map(ord, text)))] for text in texts])


def expected(text: str) -> np.ndarray:
    return np.array([float(len(text)), float(sum(map(ord, text)))])


def test_a_lone_text_is_encoded_alone():
    encoder = Recorded()
    encoder.let_go.set()
    batches = TextBatches(encoder)
    assert np.array_equal(batches.encode("红色的猫"), expected("红色的猫"))
    assert np.array_equal(batches.encode("山水"), expected("山水"))
    assert encoder.batches == [["红色的猫"], ["山水"]]


def test_texts_that_arrive_during_a_batch_are_encoded_together_each_its_own():
    encoder = Recorded()
    batches = TextBatches(encoder, most=4)
    texts = ["第一", "猫", "一只狗", "蓝色的海", "山", "花园里的花", "鸟"]
    with ThreadPoolExecutor(len(texts)) as pool:
        first = pool.submit(batches.encode, texts[0])
        assert encoder.first_started.wait(timeout=30)
        rest = [pool.submit(batches.encode, text) for text in texts[1:]]
        deadline = time.monotonic() + 30
        while len(batches._waiting) < len(texts) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        encoder.let_go.set()
        vectors = [first.result(timeout=30)] + [r.result(timeout=30) for r in rest]
    for text, vector in zip(texts, vectors, strict=True):
        assert np.array_equal(vector, expected(text))
    # The first alone; the six that waited in batches of at most four, in arrival order.
    assert [len(batch) for batch in encoder.batches] == [1, 4, 2]
    assert sorted(sum(encoder.batches[1:], [])) == sorted(texts[1:])


def test_an_error_reaches_every_request_of_its_batch_and_no_other():
    encoder = Recorded(fail_on="坏")
    batches = TextBatches(encoder)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batches.encode, "好")
        assert encoder.first_started.wait(timeout=30)
        failing = [pool.submit(batches.encode, text) for text in ("坏", "也在")]
        while len(batches._waiting) < 2:
            time.sleep(0.01)
        encoder.let_go.set()
        assert np.array_equal(first.result(timeout=30), expected("好"))
        for request in failing:
            with pytest.raises(ValueError, match="cannot encode 坏"):
                request.result(timeout=30)
    assert np.array_equal(batches.encode("之后"), expected("之后"))  # the next batch encodes


def test_a_batch_of_captions_gives_each_caption_its_own_embedding():
    """cn_clip pads every caption to its context length: a caption's embedding in a batch is
    the one it has alone."""
    from tuwen.clip.architectures import architecture
    from tuwen.clip.encode import encode_caption, encode_captions
    from tuwen.clip.models import build_model

    model = build_model(architecture("tuwen-tiny"), seed=5).eval()
    captions = ["一只红色的猫", "蓝天下的山", "a dog", "花"]
    together = encode_captions(model, captions)
    for caption, row in zip(captions, together, strict=True):
        assert np.allclose(row, encode_caption(model, caption), atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
