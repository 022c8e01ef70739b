"""Duplicate photos in an image collection: exact copies (the same bytes) and near copies
(resized, re-compressed, lightly cropped or re-saved upright: a perceptual hash a few bits
apart).

A collection's shards are hashed one by one (DCT pHash, 64 bits, of the upright picture),
and each shard's pairs are found against itself and every earlier shard, so a new shard is
compared with the others and no pair is searched again. The groups are the connected
pairs; each member says how it relates to its group's first item (kind `first`: the one of
most pixels, the first id among equals, the copy to keep): `exact` (same bytes) or `near`
with the bits its hash differs by.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuwen.files.images import ImageRejected, load_image

HASH_COLUMNS = ["id", "digest", "phash", "pixels"]
PAIR_COLUMNS = ["a", "b", "distance"]
GROUP_COLUMNS = ["group", "id", "kind", "distance", "first"]
FIRST, EXACT, NEAR = "first", "exact", "near"
_BLOCK = 1000  # rows of one side per block of hash comparisons: 1000 x N uint64 at a time


def perceptual_hashes(items: pd.DataFrame) -> pd.DataFrame:
    """Give each image's pHash and size (columns id, digest, phash as uint64, pixels; items: id,
    digest, source).
    An image that no longer reads is left out: ingest accepted it, encoding reports it."""
    import imagehash

    rows = []
    for item_id, digest, source in zip(items["id"], items["digest"], items["source"], strict=True):
        try:
            picture, _ = load_image(source, None)
        except ImageRejected:
            continue
        bits = imagehash.phash(picture).hash.flatten()
        number = np.uint64(int("".join("1" if b else "0" for b in bits), 2))
        rows.append((item_id, digest, number, picture.width * picture.height))
    table = pd.DataFrame(rows, columns=HASH_COLUMNS)
    table["phash"] = table["phash"].astype(np.uint64)
    return table


def hash_pairs(new: pd.DataFrame, earlier: pd.DataFrame, max_distance: int) -> pd.DataFrame:
    """Give the pairs (a in `new`, b in `new` after a, or in `earlier`) whose hashes differ by at
    most `max_distance` bits, or whose bytes are the same."""
    found = []
    new_hashes = new["phash"].to_numpy(np.uint64)
    for other, same in ((new, True), (earlier, False)):
        if not len(other):
            continue
        other_hashes = other["phash"].to_numpy(np.uint64)
        for start in range(0, len(new_hashes), _BLOCK):
            block = new_hashes[start : start + _BLOCK]
            distances = np.bitwise_count(block[:, None] ^ other_hashes[None, :])
            rows, columns = np.nonzero(distances <= max_distance)
            if same:  # each pair once, not an image with itself
                keep = columns > rows + start
                rows, columns = rows[keep], columns[keep]
            found.append(
                pd.DataFrame(
                    {
                        "a": new["id"].to_numpy()[rows + start],
                        "b": other["id"].to_numpy()[columns],
                        "distance": distances[rows, columns].astype(np.int64),
                    }
                )
            )
    # Same bytes are a pair whatever their hash (a hash is never > 0 bits from itself; this
    # keeps exact copies paired even with max_distance below 0).
    digests = pd.concat([new[["id", "digest"]], earlier[["id", "digest"]]])
    same_bytes = digests.merge(new[["id", "digest"]], on="digest", suffixes=("_b", "_a"))
    same_bytes = same_bytes[same_bytes["id_a"] != same_bytes["id_b"]]
    found.append(pd.DataFrame({"a": same_bytes["id_a"], "b": same_bytes["id_b"], "distance": 0}))
    pairs = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=PAIR_COLUMNS)
    ordered = (
        np.where(pairs["a"] < pairs["b"], pairs["a"], pairs["b"]),
        np.where(pairs["a"] < pairs["b"], pairs["b"], pairs["a"]),
    )
    pairs = pd.DataFrame({"a": ordered[0], "b": ordered[1], "distance": pairs["distance"].to_numpy()})
    return pairs.drop_duplicates(["a", "b"]).sort_values(["a", "b"]).reset_index(drop=True)


def duplicate_groups(pairs: pd.DataFrame, hashes: pd.DataFrame) -> pd.DataFrame:
    """Give the groups of connected pairs among the current items (`hashes`: id, digest, phash):
    one row per member, its group's first id, and `exact` or `near` with its distance in bits."""
    current = hashes.drop_duplicates("id").set_index("id")
    pairs = pairs[pairs["a"].isin(current.index) & pairs["b"].isin(current.index)]
    parent: dict[str, str] = {}

    def root(item: str) -> str:
        while parent.get(item, item) != item:
            parent[item] = parent.get(parent[item], parent[item])
            item = parent[item]
        return item

    for a, b in zip(pairs["a"], pairs["b"], strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = {}
    for item in sorted(set(pairs["a"]) | set(pairs["b"])):
        members.setdefault(root(item), []).append(item)
    rows = []
    for number, group in enumerate(sorted(members.values()), start=1):
        first = min(group, key=lambda item: (-int(current.at[item, "pixels"]), item))
        first_hash, first_digest = current.at[first, "phash"], current.at[first, "digest"]
        group = [first, *(item for item in group if item != first)]
        for item in group:
            exact = current.at[item, "digest"] == first_digest
            distance = int(np.bitwise_count(np.uint64(current.at[item, "phash"]) ^ np.uint64(first_hash)))
            kind = FIRST if item == first else EXACT if exact else NEAR
            rows.append((number, item, kind, 0 if exact else distance, first))
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)
