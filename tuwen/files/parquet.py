"""The one Parquet reader/writer of the project, and the feature-shard contract.

A feature shard holds `id` (string), `embedding` (fixed_size_list<float32>[D],
L2-normalised) and `digest` (content digest of the encoded bytes); its file metadata
names the model that made it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tuwen.errors import TuwenError
from tuwen.files.atomic import atomic_path

METADATA_KEY = b"tuwen"


def write_table(table: pa.Table, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write `table` to `path` atomically, with `metadata` as JSON under the `tuwen` key."""
    if metadata is not None:
        existing = table.schema.metadata or {}
        table = table.replace_schema_metadata(
            {**existing, METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
        )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read a whole Parquet file."""
    return pq.read_table(path)


def row_count(path: str | os.PathLike) -> int:
    """Give a Parquet file's number of rows, from its footer (nothing else is read)."""
    return pq.ParquetFile(path).metadata.num_rows


def read_metadata(path: str | os.PathLike) -> dict:
    """Give the `tuwen` metadata of a Parquet file ({} when it has none)."""
    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


@dataclass(frozen=True)
class FeatureShard:
    """Embeddings of one shard: row i of `embeddings` belongs to `ids[i]`."""

    ids: list[str]
    embeddings: np.ndarray  # float32 [N, D], rows L2-normalised
    digests: list[str]
    metadata: dict


def write_features(
    path: str | os.PathLike,
    ids: list[str],
    embeddings: np.ndarray,
    digests: list[str],
    metadata: dict,
    normalise: bool = True,
) -> None:
    """Write one feature shard; rows are L2-normalised here so every reader can rely on it.

    `normalise=False` is for rows copied from feature shards: dividing a unit vector by its
    float32 norm again moves some of its values by one ulp, enough to swap near ties.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(ids) or len(ids) != len(digests):
        raise ValueError(
            f"{path}: {len(ids)} ids, {len(digests)} digests, embeddings of shape {embeddings.shape}"
        )
    dim = embeddings.shape[1] if embeddings.ndim == 2 else 0
    if normalise:
        with np.errstate(invalid="ignore", divide="ignore"):
            embeddings = l2_normalised(embeddings)
    broken = ~np.isfinite(embeddings).all(axis=1)
    if broken.any():
        examples = ", ".join(np.asarray(ids, dtype=object)[broken][:3])
        raise TuwenError(
            f"{path}: {int(broken.sum())} of {len(ids)} embeddings are not finite (NaN or inf), "
            f"e.g. {examples}; nothing was written. On a GPU this points at an fp16 overflow "
            "or a decoding fault: encode the same items with encode.device: cpu to compare"
        )
    flat = pa.array(embeddings.reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "id": pa.array(ids, type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
            "digest": pa.array(digests, type=pa.string()),
        }
    )
    write_table(table, path, {**metadata, "embedding_dim": dim})


def l2_normalised(embeddings: np.ndarray) -> np.ndarray:
    """Give float32 rows scaled to unit length (zero rows stay zero)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, np.float32(1e-12))


def read_features(path: str | os.PathLike) -> FeatureShard:
    """Read one feature shard written by `write_features`."""
    table = read_table(path)
    metadata = read_metadata(path)
    dim = metadata["embedding_dim"]
    column = table.column("embedding").combine_chunks()
    values = column.values.to_numpy(zero_copy_only=False)
    return FeatureShard(
        ids=table.column("id").to_pylist(),
        embeddings=values.reshape(len(table), dim).astype(np.float32, copy=False),
        digests=table.column("digest").to_pylist(),
        metadata=metadata,
    )
