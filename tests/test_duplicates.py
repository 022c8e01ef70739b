"""Duplicate photos: every planted copy (resized, re-compressed, cropped, re-saved upright,
the same bytes) is found with its original, no two distinct photos are grouped, and a new
shard compared with the earlier ones gives the pairs a search of all of them gives."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.dataset_formats import photo, plant_copies
from tuwen.data.duplicates import EXACT, FIRST, NEAR, duplicate_groups, hash_pairs, perceptual_hashes
from tuwen.files.images import content_digest

MAX_DISTANCE = 10  # the schema's default


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    originals = {f"p{n:03d}.jpg": photo(n) for n in range(150)}
    for name, picture in originals.items():
        picture.save(folder / name, quality=92)
    planted = plant_copies(folder, originals)
    names = [*originals, *planted]
    items = pd.DataFrame(
        {
            "id": names,
            "digest": [content_digest((folder / n).read_bytes()) for n in names],
            "source": [str(folder / n) for n in names],
        }
    )
    return perceptual_hashes(items), planted


def test_every_planted_copy_is_found_with_its_original_and_nothing_else(library):
    hashes, planted = library
    groups = duplicate_groups(hash_pairs(hashes, hashes.iloc[0:0], MAX_DISTANCE), hashes)
    found = {frozenset(g["id"]) for _, g in groups.groupby("group")}
    assert found == {frozenset({copy, original}) for copy, original in planted.items()}
    by_id = groups.set_index("id")
    # The copy to keep is the one of most pixels: the original, not its smaller copy.
    assert by_id.loc["p000.jpg", "kind"] == FIRST and by_id.loc["copies/smaller.jpg", "kind"] == NEAR
    # Of two with the same bytes, the first id is kept and the other is its exact copy.
    same = by_id.loc[["copies/same-bytes.jpg", "p004.jpg"]]
    assert list(same["kind"]) == [FIRST, EXACT] and (same["distance"] == 0).all()
    near = by_id[by_id["kind"] == NEAR]
    # Near: other bytes, a hash within the limit (the same hash, often, after resizing).
    assert (near["distance"] <= MAX_DISTANCE).all() and by_id.loc["copies/cropped.jpg", "distance"] > 0


def test_a_new_shard_against_the_earlier_ones_gives_the_pairs_of_all_at_once(library):
    hashes, _ = library
    shards = [hashes.iloc[i : i + 40] for i in range(0, len(hashes), 40)]
    incremental = pd.concat(
        [
            hash_pairs(shard, pd.concat(shards[:n]) if n else hashes.iloc[0:0], MAX_DISTANCE)
            for n, shard in enumerate(shards)
        ]
    )
    whole = hash_pairs(hashes, hashes.iloc[0:0], MAX_DISTANCE)
    assert sorted(map(tuple, incremental[["a", "b"]].to_numpy())) == sorted(
        map(tuple, whole[["a", "b"]].to_numpy())
    )


def test_a_removed_photo_leaves_its_group(library):
    hashes, planted = library
    pairs = hash_pairs(hashes, hashes.iloc[0:0], MAX_DISTANCE)
    current = hashes[hashes["id"] != "copies/recompressed.jpg"]
    groups = duplicate_groups(pairs, current)
    assert "p001.jpg" not in set(groups["id"]) and groups["group"].nunique() == len(planted) - 1
