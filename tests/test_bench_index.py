"""The index benchmark at a small size: its rows are measured, its served index answers, and
its synthetic galleries have the near neighbours that uniform vectors lack."""

from __future__ import annotations

import numpy as np

from bench.index import bench
from bench.index_table import baseline_table, goals, index_table, served_table
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
    assert 0 < index["add_1pct_s"] < index["build_s"]
    # The codes are a quarter of 8-bit codes' 512 bytes an item (with the trained file's
    # centroids and graph beside them); the float16 rows beside them, 1,024 bytes an item.
    assert index["rows_bytes"] > 3030 * 1024 and index["bytes"] < 3030 * 512
    text = index["served"]["text"]
    assert text["recall@10"] >= 0.85 and text["1"]["p50_ms"] > 0
    assert 0.25 < index["text_like"]["cosine@100"] < index["text_like"]["image_cosine@100"]
    assert exact["what"].startswith("exact") and exact["p50_ms"] > 0
    table = index_table(rows) + baseline_table(rows) + goals(rows)
    assert "3,000 + 30" in table and "recall@10 image-like ≥ 0.95" in table
    # Served: the nprobe it was described with, then the cold and warm latencies.
    served = served_table(rows).splitlines()[-1]
    assert served.startswith(f"| 3,000 | {index['served']['nprobe']} | ")


def test_the_sweeps_text_like_queries_lie_as_far_as_asked_and_re_scoring_is_exact():
    from bench.index_sweep import build, exact_top, gallery, measure, searcher

    mixture, rows = gallery(4000, 512, seed=0)
    texts, share = mixture.calibrated_text_like(40, 5, 0.25, lambda probe: exact_top(rows, probe, 100)[1])
    _, scores = exact_top(rows, texts, 100)
    assert abs(scores.mean() - 0.25) < 0.03 and 0.05 < share < 0.95
    images = mixture.draw(40, seed=6)
    _, image_scores = exact_top(rows, images, 100)
    assert image_scores.mean() > scores.mean() + 0.05  # text-like queries lie farther away
    # Every list probed and every item re-scored from float16: the exact top 10 but for the
    # near ties that float16's rounding swaps.
    index, _, _ = build("IVF16,PQ64x4fs", rows, 16, threads=1)
    exact, _ = exact_top(rows, texts, 10)
    found, _ = measure(searcher(index, 16, len(rows), rows.astype(np.float16)), texts, exact)
    assert found >= 0.99
    coarse, _ = measure(searcher(index, 16, 10, None), texts, exact)
    assert coarse < 1.0  # the 4-bit codes alone do not rank exactly
