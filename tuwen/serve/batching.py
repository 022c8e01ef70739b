"""Concurrent queries' texts encoded in one forward pass: a model encodes a batch of texts in
far less time than each alone (tuwen-tiny-512 on one core: 8 in 11.5 ms, one in 2.7), and a
server's requests arrive together when it is busy.

No thread of its own: the first request to find no batch under way leads, encoding every text
waiting (at most MOST_TEXTS); texts that arrive meanwhile wait for the next batch, whose
leader is the first of them. A lone request is encoded alone, at once, as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

MOST_TEXTS = 16  # a batch's texts: more would make its first request wait for the last


class _Waiting:
    """One request's text, and what it waits for: its embedding, an error, or the lead."""

    __slots__ = ("error", "ready", "text", "vector")

    def __init__(self, text: str):
        self.text = text
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()


class TextBatches:
    """Encode texts by `encode_many` (texts -> one row each), concurrent ones batched."""

    def __init__(self, encode_many: Callable[[list[str]], np.ndarray], most: int = MOST_TEXTS):
        self._encode_many = encode_many
        self._most = most
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._busy = False

    def encode(self, text: str) -> np.ndarray:
        """Give the text's embedding (the row `encode_many` gives it, alone or in a batch)."""
        mine = _Waiting(text)
        with self._lock:
            self._waiting.append(mine)
            lead = not self._busy
            self._busy = True
        if not lead:
            mine.ready.wait()
            if mine.vector is None and mine.error is None:  # handed the lead
                lead = True
        if lead:
            self._lead()
        if mine.error is not None:
            raise mine.error
        assert mine.vector is not None
        return mine.vector

    def _lead(self) -> None:
        """Encode the first waiting texts (the leader's own first among them), then hand the
        lead to the next waiting request, if any."""
        with self._lock:
            batch, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
        try:
            vectors = self._encode_many([waiting.text for waiting in batch])
            for waiting, vector in zip(batch, vectors, strict=True):
                waiting.vector = vector
        except Exception as error:  # noqa: BLE001 - each request of the batch raises it, whatever it is
            for waiting in batch:
                waiting.error = error
        finally:
            for waiting in batch:  # (interrupted: no request of it may wait for ever)
                if waiting.vector is None and waiting.error is None:
                    waiting.error = RuntimeError("the query's encoding was interrupted")
            with self._lock:
                following = self._waiting[0] if self._waiting else None
                self._busy = following is not None
            for waiting in batch:
                waiting.ready.set()
            if following is not None:
                following.ready.set()  # (no vector nor error: it leads the next batch)
