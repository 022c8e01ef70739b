"""The append-only shard registry of a collection (image folder or text set).

An item, identified by (id, content digest), keeps its shard forever; new items go
into new shards. A shard's list file is written once and never rewritten, so
Snakemake sees old shards (and their features) as up to date. Changed bytes under
an old id count as removed + added. Which items are current is the assignment that
`assign_shards` gives (the registry checkpoint's output); searches read only those.

Layout under the registry folder:
    lists/{shard}.parquet    id, digest, source (image path or caption); immutable
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa

from tuwen.files.images import content_digest
from tuwen.files.parquet import read_table, write_table
from tuwen.run.declaration import IMAGES

LIST_SCHEMA = pa.schema([("id", pa.string()), ("digest", pa.string()), ("source", pa.string())])


def shard_name(number: int) -> str:
    """Give the name of shard `number`: fixed width, so names sort in creation order."""
    return f"s{number:05d}"


def shard_number(name: str) -> int:
    """Give the number of a shard named by `shard_name` (or of its file, s00003.parquet)."""
    return int(Path(name).stem.removeprefix("s"))


def list_path(registry: str | os.PathLike, shard: str) -> Path:
    """Give the path of a shard's immutable item list."""
    return Path(registry) / "lists" / f"{shard}.parquet"


def read_registry(registry: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Give every shard's item list, keyed by shard name."""
    folder = Path(registry) / "lists"
    if not folder.is_dir():
        return {}
    return {path.stem: read_table(path).to_pandas() for path in sorted(folder.glob("s*.parquet"))}


def assign_shards(items: pd.DataFrame, registry: str | os.PathLike, shard_size: int) -> pd.DataFrame:
    """Place the current items of a collection in shards; give (id, digest, shard) in item order.

    `items` has columns id, digest, source. Known items keep their shard; the new ones,
    in their given order, fill new shards of at most `shard_size` items.
    """
    if shard_size < 1:
        raise ValueError(f"shard size must be positive, got {shard_size}")
    if items["id"].duplicated().any():
        duplicated = items.loc[items["id"].duplicated(), "id"].iloc[0]
        raise ValueError(f"item id {duplicated} is given twice; ingest must reject duplicates first")
    lists = read_registry(registry)
    known = {
        (item_id, digest): shard
        for shard, table in lists.items()
        for item_id, digest in zip(table["id"], table["digest"], strict=True)
    }
    keys = list(zip(items["id"], items["digest"], strict=True))
    shards = [known.get(key) for key in keys]
    new_positions = [i for i, shard in enumerate(shards) if shard is None]
    next_number = 1 + max((int(name[1:]) for name in lists), default=-1)
    for start in range(0, len(new_positions), shard_size):
        chunk = new_positions[start : start + shard_size]
        name = shard_name(next_number)
        next_number += 1
        shard_items = items.iloc[chunk][["id", "digest", "source"]].reset_index(drop=True)
        write_table(
            pa.Table.from_pandas(shard_items, schema=LIST_SCHEMA, preserve_index=False),
            list_path(registry, name),
        )
        lists[name] = shard_items
        for i in chunk:
            shards[i] = name
    return pd.DataFrame({"id": items["id"].to_numpy(), "digest": items["digest"].to_numpy(), "shard": shards})


def active_shards(assignment: pd.DataFrame) -> list[str]:
    """Give the shards that hold at least one current item, in creation order."""
    return sorted(set(assignment["shard"]))


def registry_items(manifest: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Give the accepted items of a manifest of `kind` (tuwen.run.layout IMAGES or TEXTS) as
    (id, digest, source) rows.

    Images are identified by their bytes' digest and read from their path; captions by
    the digest of their UTF-8 text, and carried in the shard list itself.
    """
    accepted = manifest[manifest["status"] == "ok"]
    if kind == IMAGES:
        return pd.DataFrame(
            {
                "id": accepted["image_id"].to_numpy(),
                "digest": accepted["digest"].to_numpy(),
                "source": accepted["path"].to_numpy(),
            }
        )
    captions = accepted["caption"].tolist()
    return pd.DataFrame(
        {
            "id": accepted["text_id"].to_numpy(),
            "digest": [content_digest(c.encode("utf-8")) for c in captions],
            "source": captions,
        }
    )
