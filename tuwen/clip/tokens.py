"""Caption lengths in cn_clip's tokens, with cn_clip's own tokenizer, without importing torch.

`cn_clip.clip` imports torch and the model code (seconds per job) before its tokenizer;
the tokenizer module itself needs only the standard library and its vocabulary file,
so text ingest loads that one module from cn_clip's installed package by path.
"""

from __future__ import annotations

import importlib.util
import unicodedata
from functools import cache
from pathlib import Path

from tuwen.clip.architectures import CONTEXT_LENGTH
from tuwen.errors import TuwenError


@cache
def cn_clip_tokenizer():
    """Give cn_clip's `FullTokenizer` (its own module and vocabulary), loaded without torch."""
    package = importlib.util.find_spec("cn_clip")
    if package is None or not package.submodule_search_locations:
        raise TuwenError("cn_clip is not installed; install the pinned requirements (make env)")
    path = Path(next(iter(package.submodule_search_locations))) / "clip" / "bert_tokenizer.py"
    spec = importlib.util.spec_from_file_location("tuwen._cn_clip_bert_tokenizer", path)
    if spec is None or spec.loader is None:
        raise TuwenError(f"{path}: cn_clip's tokenizer cannot be loaded; reinstall the pinned requirements")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FullTokenizer()


def caption_tokens(caption: str) -> int:
    """Give the number of cn_clip tokens of a caption, [CLS] and [SEP] included.

    Longer than 52 and the model sees only the first 50 word pieces; such captions are
    kept and counted as truncated.
    """
    return len(cn_clip_tokenizer().tokenize(caption)) + 2


def is_truncated(caption: str) -> bool:
    """Tell whether cn_clip's 52-token context cuts a caption ([CLS] and [SEP] included)."""
    if most_tokens(caption) + 2 <= CONTEXT_LENGTH:
        return False
    return caption_tokens(caption) > CONTEXT_LENGTH


def most_tokens(caption: str) -> int:
    """Give an upper bound of a caption's word pieces without running the tokenizer.

    Every word piece covers at least one character of the text the tokenizer sees: the
    caption without white space, after lower-casing and NFD with combining marks dropped
    (which can only split a character into more). Captions of the contest's length
    (2-37 characters) are settled by this count alone.
    """
    decomposed = unicodedata.normalize("NFD", caption.lower())
    seen = sum(1 for char in decomposed if not char.isspace() and unicodedata.category(char) != "Mn")
    return max(seen, sum(1 for char in caption if not char.isspace()))
