"""A finished run's galleries outside tuwen: into a vector database that runs distributed
(Milvus), and into clip-retrieval's layout, so that its tools (autofaiss, clip back) read
tuwen's features.

    python -m tuwen export milvus --uri http://milvus:19530      # a Milvus server or cluster
    python -m tuwen export milvus --uri gallery.db               # Milvus Lite: a local file
    python -m tuwen export clip-retrieval --out embeddings/

Each gallery's current items are exported with the embeddings of the model that ranks it
(its task's, or the run's first model), their ids, captions (texts) or image files (images),
and the model's tag. A Milvus collection is named `<prefix><gallery>`; exporting again adds
only the shards it does not hold yet (and replaces a collection of another model's tag), so
an incremental run is followed by an incremental export. `tuwen serve --milvus URI` then
searches the galleries there instead of in its own memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tuwen.errors import TuwenError
from tuwen.files.parquet import read_features
from tuwen.run import layout

MILVUS_PREFIX = "tuwen_"
MAX_TEXT = 8192  # Milvus VARCHAR bytes for a caption or an image path
BATCH = 2000


class ExportError(TuwenError):
    """A run or a target that cannot take the export, and why."""


@dataclass(frozen=True)
class Gallery:
    """What is exported of one gallery: its kind, the ranking model's tag and feature shards,
    each current item's digest, and what each item is (a caption or an image file)."""

    name: str
    kind: str
    tag: str
    shards: list[Path]
    current: pd.Series  # id -> digest
    shown: pd.Series  # id -> caption or image path

    def rows(self) -> Iterator[tuple[str, list[str], np.ndarray]]:
        """Give each shard's current rows: (shard, ids, embeddings)."""
        for path in self.shards:
            shard = read_features(path)
            ids = np.asarray(shard.ids, dtype=object)
            keep = self.current.reindex(ids).to_numpy(dtype=object) == np.asarray(shard.digests, dtype=object)
            yield path.stem, list(ids[keep]), shard.embeddings[keep]


def run_galleries(run: Path, only: list[str] | None = None) -> list[Gallery]:
    """Give the run's galleries (its tasks' galleries, or every collection of a run with no
    task), each with the model that ranks it."""
    from tuwen.serve.loading import read_channels, read_declared, read_rankings

    declared = read_declared(run)
    channels = read_channels(run)
    rankings = read_rankings(run, declared, channels)
    names = declared.galleries()
    if only:
        unknown = sorted(set(only) - set(declared.collections))
        if unknown:
            raise ExportError(
                f"{run}: no collection {', '.join(unknown)} (collections: {', '.join(declared.collections)})"
            )
        names = only
    galleries = []
    for name in names:
        channel = channels[rankings.channel_of(declared, name)]
        shards = sorted((run / channel.folder(name)).glob("*.parquet"))
        assignment = run / layout.assignment(name)
        if not shards or not assignment.is_file():
            raise ExportError(
                f"{run}: gallery {name!r} has no feature shards of {channel.tag}; run the workflow first"
            )
        current = pd.read_parquet(assignment, columns=["id", "digest"]).drop_duplicates("id", keep="last")
        kind = declared.collections[name].kind
        galleries.append(
            Gallery(
                name,
                kind,
                channel.tag,
                shards,
                current.set_index("id")["digest"],
                shown_items(run, name, kind),
            )
        )
    return galleries


def shown_items(run: Path, name: str, kind: str) -> pd.Series:
    """Give what each item is: a text's caption, an image's file (as the run's manifest names it)."""
    manifest = run / layout.manifest(name, kind)
    if not manifest.is_file():
        return pd.Series(dtype=object)
    if kind == layout.TEXTS:
        from tuwen.data.ingest import accepted_captions

        return pd.Series(accepted_captions(manifest), dtype=object)
    images = pd.read_parquet(manifest, columns=["image_id", "path", "status"])
    images = images[images["status"] == "ok"].drop_duplicates("image_id", keep="last")
    return images.set_index("image_id")["path"]


# ---- Milvus ---------------------------------------------------------------------------------


def milvus_name(prefix: str, gallery: str) -> str:
    """Give a gallery's Milvus collection name: letters, digits and underscores only."""
    return re.sub(r"[^0-9A-Za-z_]", "_", prefix + gallery)


def milvus_client(uri: str, token: str = ""):
    from pymilvus import MilvusClient

    try:
        return MilvusClient(uri=uri, token=token)
    except Exception as error:  # noqa: BLE001 - pymilvus raises many kinds; the user needs the reason
        raise ExportError(f"cannot reach Milvus at {uri}: {error}") from None


def export_milvus(
    run: Path,
    uri: str,
    galleries: list[str] | None = None,
    prefix: str = MILVUS_PREFIX,
    token: str = "",
    index_type: str = "AUTOINDEX",
) -> list[dict]:
    """Export the run's galleries into Milvus; give, per gallery, the rows added and held."""
    client = milvus_client(uri, token)
    summary = []
    for gallery in run_galleries(run, galleries):
        name = milvus_name(prefix, gallery.name)
        if client.has_collection(name):
            held = client.describe_collection(name).get("properties", {}).get("tuwen.model_tag")
            if held != gallery.tag:
                client.drop_collection(name)  # another model's embeddings: not comparable
            else:
                client.load_collection(name)
        added = 0
        for shard, ids, embeddings in gallery.rows():
            if not client.has_collection(name):
                _create_collection(client, name, gallery, embeddings.shape[1], index_type)
            held = client.query(name, filter=f'shard == "{shard}"', output_fields=["count(*)"])[0]["count(*)"]
            if held == len(ids):
                continue
            texts = gallery.shown.reindex(ids).fillna("").astype(str)
            for start in range(0, len(ids), BATCH):
                part = slice(start, start + BATCH)
                rows = [
                    {
                        "id": i,
                        "vector": v.tolist(),
                        "text": t.encode()[:MAX_TEXT].decode(errors="ignore"),
                        "shard": shard,
                        "digest": str(gallery.current[i]),
                    }
                    for i, v, t in zip(ids[part], embeddings[part], texts.iloc[part], strict=True)
                ]
                client.upsert(name, rows)
            added += len(ids)
        client.flush(name)
        held = client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
        summary.append(
            {
                "gallery": gallery.name,
                "collection": name,
                "model_tag": gallery.tag,
                "added": added,
                "held": held,
            }
        )
    return summary


def _create_collection(client, name: str, gallery: Gallery, dim: int, index_type: str) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, description=f"tuwen gallery {gallery.name} ({gallery.kind})")
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=1024)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT)
    schema.add_field("shard", DataType.VARCHAR, max_length=64)
    schema.add_field("digest", DataType.VARCHAR, max_length=128)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type=index_type, metric_type="IP")
    properties = {"tuwen.model_tag": gallery.tag, "tuwen.kind": gallery.kind, "tuwen.gallery": gallery.name}
    client.create_collection(name, schema=schema, index_params=index, properties=properties)


# ---- clip-retrieval ---------------------------------------------------------------------------


def export_clip_retrieval(run: Path, out: Path, galleries: list[str] | None = None) -> list[dict]:
    """Write each gallery in clip-retrieval's layout under `out/<gallery>/`: float16 embeddings
    in `img_emb/img_emb_<n>.npy` (images) or `text_emb/text_emb_<n>.npy` (texts), and row for
    row `metadata/metadata_<n>.parquet` (image_path or caption, and tuwen's id and model tag),
    one part per feature shard."""
    summary = []
    for gallery in run_galleries(run, galleries):
        folder = out / gallery.name
        emb = "img_emb" if gallery.kind == layout.IMAGES else "text_emb"
        (folder / emb).mkdir(parents=True, exist_ok=True)
        (folder / "metadata").mkdir(parents=True, exist_ok=True)
        rows = 0
        for number, (_, ids, embeddings) in enumerate(gallery.rows()):
            part = str(number).zfill(5)
            np.save(folder / emb / f"{emb}_{part}.npy", embeddings.astype(np.float16))
            shown = gallery.shown.reindex(ids).fillna("").astype(str).tolist()
            column = "image_path" if gallery.kind == layout.IMAGES else "caption"
            if gallery.kind == layout.IMAGES:
                shown = [str((run / path).resolve()) if path else "" for path in shown]
            table = pd.DataFrame({column: shown, "id": ids, "model_tag": gallery.tag})
            pq.write_table(_arrow(table), folder / "metadata" / f"metadata_{part}.parquet")
            rows += len(ids)
        summary.append(
            {"gallery": gallery.name, "folder": str(folder), "rows": rows, "model_tag": gallery.tag}
        )
    return summary


def _arrow(table: pd.DataFrame):
    import pyarrow as pa

    return pa.Table.from_pandas(table, preserve_index=False)
