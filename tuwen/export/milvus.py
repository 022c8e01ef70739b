"""A finished run's galleries into a vector database that runs distributed (Milvus).

    python -m tuwen export milvus --uri http://milvus:19530      # a Milvus server or cluster
    python -m tuwen export milvus --uri gallery.db               # Milvus Lite: a local file

Each gallery's current items are exported with the embeddings of the model that ranks it
(its task's, or the run's first model), their ids, captions (texts) or image files (images),
and the model's tag; a gallery whose photos' text the run reads (keywords.enabled, or
fusion's OCR) also holds that text in a field Milvus's own full-text search indexes (BM25
over the jieba tokenizer's Chinese words), which `tuwen serve --milvus` uses for the keyword
half of a hybrid query. A Milvus collection is named `<prefix><gallery>`; exporting again adds
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
# The collection property that says its `ocr` field is indexed for BM25, and the fields.
KEYWORDS_PROPERTY, KEYWORDS_BM25 = "tuwen.keywords", "bm25"
OCR_FIELD, OCR_SPARSE_FIELD = "ocr", "ocr_sparse"
# Milvus Lite and Milvus 2.5+ both tokenize Chinese with jieba (Lite has no "chinese" analyzer type).
OCR_ANALYZER = {"tokenizer": "jieba"}
MAX_TEXT = 8192  # Milvus VARCHAR bytes for a caption or an image path
BATCH = 2000


def milvus_name(prefix: str, gallery: str) -> str:
    """Give a gallery's Milvus collection name: letters, digits and underscores only."""
    return re.sub(r"[^0-9A-Za-z_]", "_", prefix + gallery)


def holds_keywords(properties: dict) -> bool:
    """Whether a collection's properties say its `ocr` field is indexed for BM25."""
    return properties.get(KEYWORDS_PROPERTY) == KEYWORDS_BM25


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
            properties = client.describe_collection(name).get("properties", {})
            keywords = holds_keywords(properties)
            if properties.get("tuwen.model_tag") != gallery.tag or keywords != (gallery.read is not None):
                # Another model's embeddings are not comparable; a changed schema is made anew.
                client.drop_collection(name)
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
            read = gallery.read.reindex(ids).fillna("").astype(str) if gallery.read is not None else None
            for start in range(0, len(ids), BATCH):
                part = slice(start, start + BATCH)
                rows = [
                    {
                        "id": i,
                        "vector": v.tolist(),
                        "text": _clipped(t),
                        "shard": shard,
                        "digest": str(gallery.current[i]),
                    }
                    for i, v, t in zip(ids[part], embeddings[part], texts.iloc[part], strict=True)
                ]
                if read is not None:
                    for row, text in zip(rows, read.iloc[part], strict=True):
                        row[OCR_FIELD] = _clipped(text)
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


def _clipped(text: str) -> str:
    """Give a text cut to what a VARCHAR field holds (MAX_TEXT bytes, whole characters)."""
    return text.encode()[:MAX_TEXT].decode(errors="ignore")


def _create_collection(client: Any, name: str, gallery: Gallery, dim: int, index_type: str) -> None:
    from pymilvus import DataType, Function, FunctionType

    schema = client.create_schema(auto_id=False, description=f"tuwen gallery {gallery.name} ({gallery.kind})")
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=1024)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT)
    schema.add_field("shard", DataType.VARCHAR, max_length=64)
    schema.add_field("digest", DataType.VARCHAR, max_length=128)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type=index_type, metric_type="IP")
    properties = {"tuwen.model_tag": gallery.tag, "tuwen.kind": gallery.kind, "tuwen.gallery": gallery.name}
    if gallery.read is not None:
        schema.add_field(
            OCR_FIELD,
            DataType.VARCHAR,
            max_length=MAX_TEXT,
            enable_analyzer=True,
            analyzer_params=OCR_ANALYZER,
        )
        schema.add_field(OCR_SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="ocr_bm25",
                function_type=FunctionType.BM25,
                input_field_names=[OCR_FIELD],
                output_field_names=[OCR_SPARSE_FIELD],
            )
        )
        index.add_index(field_name=OCR_SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        properties[KEYWORDS_PROPERTY] = KEYWORDS_BM25
    client.create_collection(name, schema=schema, index_params=index, properties=properties)
