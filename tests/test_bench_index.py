"""The index benchmark at a small size: its rows are measured, its served index answers, and
its synthetic galleries have the near neighbours that uniform vectors lack."""

from __future__ import annotations

import numpy as np

from bench.index import bench
from bench.index_table import baseline_table, goals, index_table
from bench.synthetic import Mixture


def test_the_mixture_has_near_neighbours_and_uniform_vectors_do_not():
    mixture = Mixture.spectral(clusters=50, noise=0.04, seed=0)
    items, queries = mixture.draw(5000, seed=1), mixture.draw(50, seed=2)
    uniform = np.random.default_rng(0).normal(size=(5000, 512)).astype(np.float32)
    uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
    assert np.allclose(np.linalg.norm(items, axis=1), 1, atol=1e-5)
    nearest = (queries @ items.T).max(axis=1).mean()
    assert nearest > 0.4 and nearest > 3 * (queries @ uniform.T).max(axis=1).mean()
    assert np.array_equal(mixture.draw(10, seed=7), mixture.draw(10, seed=7))


def test_a_small_run_is_built_grown_measured_and_served(tmp_path):
    rows = bench(3000, tmp_path, 500, threads=1, usearch=False, http=False, milvus=False)
    index, exact = rows[0], rows[1]
    assert index["segments"] == 3 and index["add_1pct_segments"] == 1  # 6 shards: 4 + 1 + 1; then + 1
    assert index["served"]["recall@10"] >= 0.9 and index["served"]["exact"] is False
    assert 0 < index["add_1pct_s"] < index["build_s"] and index["bytes"] > 3000 * 512
    assert exact["what"].startswith("exact") and exact["p50_ms"] > 0
    table = index_table(rows) + baseline_table(rows) + goals(rows)
    assert "3,000 + 30" in table and "recall@10 ≥ 0.95" in table
