"""The append-only shard registry: old shards never change, new items get new shards."""

import os

import pandas as pd

from tuwen.data.shards import assign_shards, list_path


def items(ids, digest="d"):
    return pd.DataFrame(
        {"id": ids, "digest": [f"{digest}-{i}" for i in ids], "source": [f"/data/{i}" for i in ids]}
    )


def test_first_assignment_fills_shards_in_order(tmp_path):
    assignment = assign_shards(items(list("abcde")), tmp_path, shard_size=2)
    assert list(assignment["shard"]) == ["s00000", "s00000", "s00001", "s00001", "s00002"]


def test_adding_items_creates_new_shards_and_leaves_old_ones_untouched(tmp_path):
    assign_shards(items(list("abc")), tmp_path, shard_size=2)
    old_lists = {
        s: (list_path(tmp_path, s).read_bytes(), os.stat(list_path(tmp_path, s)).st_mtime_ns)
        for s in ("s00000", "s00001")
    }
    assignment = assign_shards(items(list("xabcy")), tmp_path, shard_size=2)
    assert dict(zip(assignment["id"], assignment["shard"], strict=True)) == {
        "x": "s00002",
        "a": "s00000",
        "b": "s00000",
        "c": "s00001",
        "y": "s00002",
    }
    for shard, (content, mtime) in old_lists.items():
        assert list_path(tmp_path, shard).read_bytes() == content
        assert os.stat(list_path(tmp_path, shard)).st_mtime_ns == mtime


def test_changed_content_counts_as_removed_plus_added(tmp_path):
    assign_shards(items(list("ab")), tmp_path, shard_size=2)
    changed = pd.concat([items(["a"]), items(["b"], digest="new")], ignore_index=True)
    assignment = assign_shards(changed, tmp_path, shard_size=2)
    assert list(assignment["shard"]) == ["s00000", "s00001"]
    assert list(assignment["digest"]) == ["d-a", "new-b"]
    assert pd.read_parquet(list_path(tmp_path, "s00000"))["id"].tolist() == ["a", "b"]  # never rewritten


def test_removed_items_leave_the_assignment(tmp_path):
    assign_shards(items(list("abc")), tmp_path, shard_size=3)
    assignment = assign_shards(items(list("ac")), tmp_path, shard_size=3)
    assert list(assignment["id"]) == ["a", "c"] and set(assignment["shard"]) == {"s00000"}
