"""A finished run's galleries into a vector database that runs distributed (Milvus).

    python -m tuwen export milvus --uri http://milvus:19530      # a Milvus server or cluster
    python -m tuwen export milvus --uri gallery.db               # Milvus Lite: a local file

Each gallery's current items are exported with the embeddings of the model that ranks it
(its task's, or the run's first model), their ids, captions (texts) or image files (images),
and the model's tag. A Milvus collection is named `<prefix><gallery>`; exporting again adds
only the shards it does not hold yet (and replaces a collection of another model's tag), so
an incremental run is followed by an incremental export. `tuwen serve --milvus URI` then
searches the galleries there instead of in its own memory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tuwen.export.galleries import ExportError, Gallery, run_galleries

MILVUS_PREFIX = "tuwen_"
MAX_TEXT = 8192  # Milvus VARCHAR bytes for a caption or an image path
BATCH = 2000


def milvus_name(prefix: str, gallery: str) -> str:
    """Give a gallery's Milvus collection name: letters, digits and underscores only."""
    return re.sub(r"[^0-9A-Za-z_]", "_", prefix + gallery)


def milvus_client(uri: str, token: str = "") -> Any:
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


def _create_collection(client: Any, name: str, gallery: Gallery, dim: int, index_type: str) -> None:
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
