"""Sentence encoders: the pretrained vectors of the wheels, held to a stored reference."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REPO
from tuwen.text.sentences import (
    BGE_SMALL_ZH,
    E5_SMALL,
    USE_M3,
    EncoderMissing,
    load_sentence_encoder,
)

REFERENCE = np.load(REPO / "tests/data/sentence_reference.npz")
TEXTS = [str(t) for t in REFERENCE["texts"]]


@pytest.mark.parametrize(("name", "dim"), [(USE_M3, 512), (E5_SMALL, 384)])
def test_an_encoder_gives_the_vectors_of_its_stored_reference(name, dim):
    """A new version of the package that moved its vectors fails here, not silently in recall."""
    encoder = load_sentence_encoder(name)
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    reference = REFERENCE[name.replace("-", "_")]
    assert np.min(np.sum(vectors * reference, axis=1)) > 0.9999
    # By meaning: the two clothing texts, which share no character, are nearer than the cat.
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2]
    assert encoder.channel == f"text:{name}" and encoder.tag.startswith(f"{name}-")


def test_an_empty_text_is_no_evidence():
    encoder = load_sentence_encoder(USE_M3)
    vectors = encoder.encode(["", "   ", "猫"])
    assert not vectors[:2].any() and np.linalg.norm(vectors[2]) == pytest.approx(1, abs=1e-5)


def test_batches_give_the_vectors_of_one_call():
    encoder = load_sentence_encoder(E5_SMALL)
    whole = encoder.encode(TEXTS)
    assert np.allclose(encoder.encode(TEXTS, per_batch=1), whole, atol=1e-6)


def test_an_encoder_that_is_not_here_is_one_line(tmp_path):
    with pytest.raises(EncoderMissing, match="no sentence encoder 'nope'"):
        load_sentence_encoder("nope")
    # bge-small-zh needs sentence-transformers and its weights; offline, one line says what.
    with pytest.raises(EncoderMissing) as missing:
        load_sentence_encoder(BGE_SMALL_ZH, tmp_path)
    assert "\n" not in str(missing.value) and (
        "sentence-transformers" in str(missing.value) or str(tmp_path) in str(missing.value)
    )
