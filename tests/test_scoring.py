"""One ranking everywhere: a single query ranked by tuwen.ranking.scoring gets its result-table row,
re-ranking included, and a new query is ranked as if it had been one of the table's."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_fusion import random_task
from tuwen.ranking.fusion import TaskChannels, fused_topk, query_bank
from tuwen.ranking.scoring import FusionRecipe, Ranking, cosines, rank_query, table_row_parts

RECIPES = [
    FusionRecipe((("clip:a", 1.0), ("clip:b", 0.5), ("ocr", 0.3)), None),
    FusionRecipe((("clip:a", 1.0), ("clip:b", 0.0), ("ocr", 1.0)), 0.05),
    FusionRecipe((("clip:a", 1.0), ("clip:b", 2.0), ("ocr", 0.0)), 0.1),
]


def one_query_blocks(channels: TaskChannels, row: int, fused: bool) -> dict[str, np.ndarray]:
    """The query's scores by each channel as the server computes them, from its vectors."""
    blocks = {
        name: cosines(gallery, queries[row], fused) for name, (queries, gallery) in channels.embedded.items()
    }
    blocks["ocr"] = channels.ocr[row].toarray()[0]
    return blocks


def without_query(channels: TaskChannels, row: int) -> TaskChannels:
    keep = [i for i in range(len(channels.query_ids)) if i != row]
    fewer = TaskChannels([channels.query_ids[i] for i in keep], channels.gallery_ids)
    fewer.embedded = {
        name: (queries[keep], gallery) for name, (queries, gallery) in channels.embedded.items()
    }
    fewer.ocr = channels.ocr[keep]
    return fewer


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.label)
def test_a_tables_own_query_gets_exactly_its_row(recipe):
    channels = random_task(3)
    table = fused_topk(channels, recipe, 10)
    bank = query_bank(channels, recipe)
    ranking = Ranking("clip:a", recipe, bank)
    for row in (0, 7, 39):
        hits = rank_query(one_query_blocks(channels, row, True), ranking, 10, member=True)
        expected = table[table["query_id"] == channels.query_ids[row]]
        assert [channels.gallery_ids[h.column] for h in hits] == list(expected["target_id"])
        assert [h.score for h in hits] == pytest.approx(list(expected["score"]), abs=1e-12)
        for hit, (_, table_row) in zip(hits, expected.iterrows(), strict=True):
            expected_parts = table_row_parts(table_row, recipe)
            assert [name for name, _ in hit.parts] == [name for name, _ in expected_parts]
            assert [v for _, v in hit.parts] == pytest.approx([v for _, v in expected_parts], abs=1e-12)
            assert sum(v for _, v in hit.parts) == pytest.approx(hit.score, abs=1e-12)
            assert hit.cosine == pytest.approx(table_row["score_clip:a".replace(":", "_")], abs=1e-12)


@pytest.mark.parametrize("recipe", RECIPES[1:], ids=lambda r: r.label)
def test_a_new_query_is_ranked_as_if_the_table_had_held_it(recipe):
    """The bank of the other queries, with the new one added, re-ranks as the whole table does."""
    channels = random_task(4)
    table = fused_topk(channels, recipe, 10)
    row = 11
    others = query_bank(without_query(channels, row), recipe)
    hits = rank_query(one_query_blocks(channels, row, True), Ranking("clip:a", recipe, others), 10)
    expected = table[table["query_id"] == channels.query_ids[row]]
    assert [channels.gallery_ids[h.column] for h in hits] == list(expected["target_id"])
    assert [h.score for h in hits] == pytest.approx(list(expected["score"]), abs=1e-9)
    # Taken for one of the bank's own, it would be ranked differently: the bank must grow.
    taken = rank_query(
        one_query_blocks(channels, row, True), Ranking("clip:a", recipe, others), 10, member=True
    )
    assert [h.score for h in taken] != pytest.approx([h.score for h in hits], abs=1e-9)


def test_candidates_are_scored_as_the_whole_gallery_is():
    """An approximate index's candidates: the same scores at those columns, ties by id."""
    channels = random_task(5)
    recipe = RECIPES[1]
    bank = query_bank(channels, recipe)
    blocks = one_query_blocks(channels, 2, True)
    everything = rank_query(blocks, Ranking("clip:a", recipe, bank), 5, member=True)
    columns = np.array(sorted({h.column for h in everything} | {1, 4, 60}))
    some = rank_query(
        {n: b[columns] for n, b in blocks.items()}, Ranking("clip:a", recipe, bank), 5, columns, True
    )
    assert some == everything


def test_one_channel_ranks_by_float32_cosine_with_ties_by_id():
    gallery = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    query = np.array([1, 0], dtype=np.float32)
    hits = rank_query({"clip": cosines(gallery, query, False)}, Ranking("clip"), 3)
    assert [h.column for h in hits] == [0, 2, 3] and [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].parts == () and hits[2].score == pytest.approx(0.6) and hits[0].score == hits[0].cosine
    assert (
        cosines(gallery, query, False).dtype == np.float32
        and cosines(gallery, query, True).dtype == np.float64
    )


def test_a_recipe_that_re_ranks_without_its_bank_says_so():
    recipe = RECIPES[1]
    assert (
        Ranking("clip:a", recipe).missing()
        and not Ranking("clip:a", recipe.__class__(recipe.weights)).missing()
    )


def test_reciprocal_rank_fusion_adds_each_lists_share_and_breaks_ties_by_column():
    from tuwen.ranking.hybrid import RANK_CONSTANT, ranked_list, reciprocal_rank_fusion

    columns = np.array([3, 5, 8, 9])
    meaning = ranked_list("clip:m", np.array([0.30, 0.10, 0.20, 0.30]), columns, depth=3, matched_only=False)
    # Cosines tie at 0.30: column 3 before 9; the list holds its best 3 only.
    assert meaning.columns.tolist() == [3, 9, 8]
    keywords = ranked_list("ocr", np.array([0.0, 2.5, 0.0, 1.0]), columns, depth=3, matched_only=True)
    assert keywords.columns.tolist() == [5, 9]  # what shared nothing with the query is not in it
    hits = reciprocal_rank_fusion([meaning, keywords], k=3)
    share = [1 / (RANK_CONSTANT + rank) for rank in (1, 2, 3)]
    # 9: second in both lists; 3: first by meaning only; 5: first by keywords only (3 before 5).
    assert [hit.column for hit in hits] == [9, 3, 5]
    assert hits[0].score == pytest.approx(2 * share[1]) and hits[0].found_by == (("clip:m", 2), ("ocr", 2))
    assert hits[1].parts == (("clip:m", pytest.approx(share[0])),) and hits[2].found_by == (("ocr", 1),)
    assert [hit.rank for hit in hits] == [1, 2, 3]
    for hit in hits:
        assert sum(value for _, value in hit.parts) == pytest.approx(hit.score)
    assert reciprocal_rank_fusion([ranked_list("ocr", np.zeros(4), columns, 3, True)], k=3) == []
