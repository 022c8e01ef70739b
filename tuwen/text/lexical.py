"""Lexical similarity of two texts: BM25 over character unigrams and bigrams.

Chinese has no spaces, and OCR splits and garbles words, so the units are characters and
pairs of adjacent characters (within a run of letters, digits or CJK characters), after
NFKC (full-width forms to half-width) and lower-casing. Scores are BM25 (Robertson /
Lucene idf, k1 = 1.2, b = 0.75) of a query's units against each document; the document
side is indexed once as a sparse matrix, so scoring every query is one sparse product.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import numpy as np
from scipy import sparse

K1, B = 1.2, 0.75
# Runs of letters, digits and CJK ideographs; everything else (spaces, punctuation) splits.
_WORD_RUN = re.compile(r"[0-9a-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def text_units(text: str) -> list[str]:
    """Give the character unigrams and bigrams of `text`, in order."""
    units = []
    for run in _WORD_RUN.findall(unicodedata.normalize("NFKC", text or "").lower()):
        units.extend(run)
        units.extend(run[i : i + 2] for i in range(len(run) - 1))
    return units


class BM25Index:
    """BM25 weights of a fixed set of documents: `scores(queries)` gives queries x documents."""

    def __init__(self, documents: list[str]):
        counts = [Counter(text_units(d)) for d in documents]
        self.vocabulary: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        for row, count in enumerate(counts):
            for unit, tf in count.items():
                rows.append(row)
                cols.append(self.vocabulary.setdefault(unit, len(self.vocabulary)))
                tfs.append(tf)
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        average = lengths.mean() if len(lengths) and lengths.mean() > 0 else 1.0
        rows_a, cols_a, tf_a = np.array(rows, np.int64), np.array(cols, np.int64), np.array(tfs, np.float64)
        frequency = np.bincount(cols_a, minlength=len(self.vocabulary)).astype(np.float64)
        n = len(documents)
        idf = np.log1p((n - frequency + 0.5) / (frequency + 0.5))
        norm = K1 * (1 - B + B * lengths[rows_a] / average)
        weights = idf[cols_a] * tf_a * (K1 + 1) / (tf_a + norm)
        self.weights = sparse.csr_matrix((weights, (rows_a, cols_a)), shape=(n, len(self.vocabulary)))

    def query_matrix(self, queries: list[str]) -> sparse.csr_matrix:
        """Give the queries' unit counts over this index's vocabulary (unknown units dropped)."""
        rows, cols, values = [], [], []
        for row, query in enumerate(queries):
            for unit, count in Counter(text_units(query)).items():
                column = self.vocabulary.get(unit)
                if column is not None:
                    rows.append(row)
                    cols.append(column)
                    values.append(float(count))
        return sparse.csr_matrix((values, (rows, cols)), shape=(len(queries), len(self.vocabulary)))

    def scores(self, queries: list[str]) -> sparse.csr_matrix:
        """Give BM25 scores, queries x documents, float64 (sparse: most pairs share nothing)."""
        return (self.query_matrix(queries) @ self.weights.T).tocsr()


def normalised_by_query(scores: sparse.csr_matrix) -> sparse.csr_matrix:
    """Divide each query's scores by its best one, so every query's scale is [0, 1] (0 if no match)."""
    best = scores.max(axis=1).toarray().ravel()
    scale = np.divide(1.0, best, out=np.zeros_like(best), where=best > 0)
    return sparse.diags(scale) @ scores
