"""Fusion: lexical scores, the exact fused top-k against a dense float64 reference, and tuning."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tuwen.ranking.fusion import FusionRecipe, build_channels, fused_topk, query_groups
from tuwen.ranking.recall import rankings_of, recall_at_k
from tuwen.ranking.tuning import (
    EXHAUSTIVE_LIMIT,
    candidate_recipes,
    chance_p_values,
    eligible_channels,
    evaluate_recipes,
    search_recipes,
)
from tuwen.text.lexical import BM25Index, normalised_by_query, text_units


def test_text_units_are_characters_and_bigrams_of_word_runs():
    assert text_units("Ｆ1 红色,猫!") == ["f", "1", "f1", "红", "色", "红色", "猫"]
    assert text_units("") == [] and text_units("，。！") == []


def test_bm25_matches_the_formula():
    documents = ["红色的猫", "蓝色的狗", "", "猫猫猫"]
    scores = BM25Index(documents).scores(["猫"]).toarray()[0]
    n, lengths = 4, [len(text_units(d)) for d in documents]
    average = sum(lengths) / n
    idf = math.log1p((n - 2 + 0.5) / (2 + 0.5))  # 猫 is in 2 of 4 documents

    def bm25(tf, length):
        return idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * length / average))

    assert scores == pytest.approx([bm25(1, lengths[0]), 0.0, 0.0, bm25(3, lengths[3])])
    normalised = normalised_by_query(BM25Index(documents).scores(["猫", "鱼"])).toarray()
    assert normalised[0].max() == 1.0 and not normalised[1].any()


def random_task(seed: int, queries: int = 40, gallery: int = 90):
    rng = np.random.default_rng(seed)
    words = list("红橙黄绿青蓝紫猫狗鱼鸟山水花草书店报纸新闻")
    gallery_ids = [f"g{i:03d}" for i in rng.permutation(gallery)]
    query_ids = [f"q{i:03d}" for i in range(queries)]

    def unit(n):
        x = rng.normal(size=(n, 16)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    clip = {
        m: (
            dict(zip(query_ids, unit(queries), strict=True)),
            dict(zip(gallery_ids, unit(gallery), strict=True)),
        )
        for m in ("clip:a", "clip:b")
    }
    # Coarse values make exact ties common, so tie-breaking is tested too.
    for model in clip:
        for table in clip[model]:
            for key in table:
                table[key] = np.round(table[key] * 4) / 4
    texts = (
        {q: "".join(rng.choice(words, rng.integers(0, 6))) for q in query_ids},
        {g: "".join(rng.choice(words, rng.integers(0, 6))) for g in gallery_ids},
    )
    return build_channels(query_ids, clip, texts, logit_scale=50.0)


def dense_reference(channels, setting: FusionRecipe, k: int, groups: np.ndarray) -> pd.DataFrame:
    everything = slice(0, len(channels.query_ids))
    fused = sum(w * channels.block(n, everything) for n, w in setting.weights if w)
    final = fused.copy()
    if setting.temperature:
        for group in np.unique(groups):
            scaled = fused[groups == group] / setting.temperature
            lse = np.log(np.exp(scaled - scaled.max(axis=0)).sum(axis=0)) + scaled.max(axis=0)
            final[groups == group] = fused[groups == group] - setting.temperature * lse
    rows = []
    for i, query in enumerate(channels.query_ids):
        ids = channels.gallery_ids
        order = sorted(range(len(ids)), key=lambda j: (-final[i, j], ids[j]))
        rows += [(query, r + 1, channels.gallery_ids[j], final[i, j]) for r, j in enumerate(order[:k])]
    return pd.DataFrame(rows, columns=["query_id", "rank", "target_id", "score"])


@pytest.mark.parametrize("temperature", [None, 0.05])
@pytest.mark.parametrize("block_rows", [1, 7, 256])
def test_fused_topk_equals_the_dense_float64_reference(temperature, block_rows):
    channels = random_task(0)
    groups = query_groups(channels.query_ids, len(channels.gallery_ids), ratio=10)
    assert len(set(groups)) > 1
    setting = FusionRecipe((("clip:a", 1.0), ("clip:b", 0.5), ("ocr", 0.3)), temperature)
    topk = fused_topk(channels, setting, 10, groups, block_rows=block_rows)
    expected = dense_reference(channels, setting, 10, groups)
    columns = ["query_id", "rank", "target_id"]
    assert topk[columns].values.tolist() == expected[columns].values.tolist()
    assert np.allclose(topk["score"], expected["score"], rtol=0, atol=1e-12)
    expected_columns = {"score_clip_a", "score_clip_b", "score_ocr", "cosine", "fused", "probability"}
    assert expected_columns <= set(topk.columns)
    assert (topk["cosine"] == topk["score_clip_a"].astype(np.float32)).all()


def test_gallery_order_and_shard_layout_do_not_change_the_result():
    channels = random_task(1)
    setting = FusionRecipe((("clip:a", 1.0), ("clip:b", 0.0), ("ocr", 1.0)), 0.1)
    # The same task with its gallery given in another order (another shard layout) and as
    # a model's embeddings split differently: build_channels sorts the gallery by id.
    clip = {
        m: (
            dict(zip(channels.query_ids, channels.embedded[m][0], strict=True)),
            dict(reversed(list(zip(channels.gallery_ids, channels.embedded[m][1], strict=True)))),
        )
        for m in channels.embedded
    }
    rebuilt = build_channels(channels.query_ids, clip, None, 50.0)
    rebuilt.ocr = channels.ocr
    assert rebuilt.gallery_ids == channels.gallery_ids
    assert fused_topk(rebuilt, setting, 5).equals(fused_topk(channels, setting, 5))


def test_reranking_lowers_a_hub():
    # g0 is a hub: close to every query; each query's own target is slightly less close.
    queries = [f"q{i}" for i in range(5)]
    eye = np.eye(6, dtype=np.float32)
    hub = np.full(6, 1 / math.sqrt(6), dtype=np.float32)
    query_vectors = {q: (eye[i + 1] + hub) / np.linalg.norm(eye[i + 1] + hub) for i, q in enumerate(queries)}
    gallery = {"g0": hub, **{f"t{i}": eye[i + 1] for i in range(5)}}
    channels = build_channels(queries, {"clip": (query_vectors, gallery)}, None, 100.0)
    positives = {q: {f"t{i}"} for i, q in enumerate(queries)}
    plain = fused_topk(channels, FusionRecipe((("clip", 1.0),)), 1)
    reranked = fused_topk(channels, FusionRecipe((("clip", 1.0),), 0.05), 1)
    gallery_ids = set(channels.gallery_ids)
    assert recall_at_k(rankings_of(plain), positives, gallery_ids)["R@1"] == 0.0
    assert recall_at_k(rankings_of(reranked), positives, gallery_ids)["R@1"] == 1.0


def test_candidate_settings_start_with_each_channel_alone():
    settings = candidate_recipes(["clip", "ocr"], [0.5, 1.0], [0.1])
    labels = [s.label for s in settings]
    assert labels[:4] == ["clip", "clip+rerank", "ocr", "ocr+rerank"]
    assert labels.count("clip+ocr") == 2 and labels.count("clip+ocr+rerank") == 2
    assert FusionRecipe.from_dict(settings[5].describe()) == settings[5]


def noisy_channels(names: list[str], seed: int = 0, blind: tuple[str, ...] = ()):
    """A task of 30 queries whose i-th query matches gallery item i, seen by each channel
    through noise; `blind` channels see nothing of it (pure noise)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(30, 16))
    clip = {}
    for k, name in enumerate(names):
        noise = 1e6 if name in blind else 0.5 + k * 0.4

        def unit(x):
            return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

        queries = unit(truth + noise * rng.normal(size=truth.shape))
        gallery = unit(truth + noise * rng.normal(size=truth.shape))
        clip[name] = (
            {f"q{i:02d}": v for i, v in enumerate(queries)},
            {f"g{i:02d}": v for i, v in enumerate(gallery)},
        )
    channels = build_channels([f"q{i:02d}" for i in range(30)], clip, None, 100.0)
    positives = {f"q{i:02d}": {f"g{i:02d}"} for i in range(30)}
    return channels, positives, np.zeros(30, dtype=np.int64)


def test_few_channels_are_searched_exhaustively():
    channels, positives, groups = noisy_channels(["clip:a", "clip:b"])
    searched = search_recipes(channels, [0.5, 1.0], [0.1], positives, groups, ["clip:a", "clip:b"])
    expected = evaluate_recipes(
        channels, candidate_recipes(channels.names, [0.5, 1.0], [0.1]), positives, groups
    )
    assert searched == expected


def test_many_channels_are_searched_forward_from_the_best_single_one():
    names = [f"clip:m{k}" for k in range(5)] + ["clip:m0:base"]
    channels, positives, groups = noisy_channels(names)
    weights, temperatures = [0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0], [0.01, 0.05]
    assert len(candidate_recipes(names, weights, temperatures)) > EXHAUSTIVE_LIMIT
    searched = search_recipes(channels, weights, temperatures, positives, groups, ["clip:m0", "clip:m1"])
    assert len(searched) < EXHAUSTIVE_LIMIT
    labels = {item.recipe.label for item in searched}
    assert set(names) <= labels and "clip:m0+clip:m1" in labels  # each alone, and the models together
    singles = [item for item in searched if len(item.recipe.used) == 1]
    best = max(searched, key=lambda item: item.mean)
    assert best.mean >= max(item.mean for item in singles)
    # Forward selection only stops when no added channel helps.
    chosen = dict(best.recipe.weights)
    for name in names:
        if not chosen[name]:
            grown = [
                FusionRecipe(tuple((n, chosen[n] if n != name else w) for n in names), t)
                for w in weights
                for t in (None, *temperatures)
            ]
            assert (
                max(item.mean for item in evaluate_recipes(channels, grown, positives, groups)) <= best.mean
            )


def test_chance_p_values_are_calibrated_on_channels_that_see_nothing():
    """Over many tasks where a channel is pure noise, p < alpha about alpha of the time (at
    most: the count is discrete); a channel that sees the task is far from chance."""
    p_blind, p_seeing = [], []
    for seed in range(150):
        channels, positives, groups = noisy_channels(["clip:sees", "clip:blind"], seed, blind=("clip:blind",))
        p_values = chance_p_values(channels, positives, groups)
        p_blind.append(p_values["clip:blind"])
        p_seeing.append(p_values["clip:sees"])
    for alpha in (0.2, 0.5):
        assert alpha / 2 <= np.mean(np.array(p_blind) < alpha) <= alpha + 0.08, alpha
    assert max(p_seeing) < 1e-6


def test_a_channel_at_chance_is_tried_alone_but_never_combined():
    for names in (["clip:a", "clip:b"], [f"clip:m{k}" for k in range(5)] + ["clip:m0:base"]):
        blind = names[1]
        channels, positives, groups = noisy_channels(names, blind=(blind,))
        eligible = eligible_channels(chance_p_values(channels, positives, groups), 0.01)
        assert blind not in eligible and names[0] in eligible
        searched = search_recipes(channels, [0.5, 1.0], [0.1], positives, groups, names[:2], eligible)
        assert blind in {item.recipe.label for item in searched}
        assert all(blind not in item.recipe.used for item in searched if len(item.recipe.used) > 1)
    # Where no channel is above chance, none is preferred: all may be combined.
    assert eligible_channels({"clip:a": 0.3, "ocr": 0.5}, 0.01) == ["clip:a", "ocr"]
