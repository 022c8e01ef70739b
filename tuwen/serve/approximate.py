"""A gallery searched through its approximate index (tuwen.ranking.index) by the server: the index's
candidates for a query, as the gallery's columns, and the index's scores of them.

The server reads each indexed gallery's description (`results/index/<gallery>/index.json`,
as the run's record names it); a gallery whose description has no index (fewer than
index.min_items items) is searched exactly. Rows that are no longer the
collection's current items (superseded by a later shard) are never candidates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tuwen.finished.items import current_items, find_sorted, places_among, string_array
from tuwen.finished.reader import FinishedRun
from tuwen.ranking.index import SegmentedIndex, split_ids


@dataclass
class GalleryIndex:
    """A gallery's index, and where each indexed row is among the gallery's columns: shard
    `s`'s row `r` is column `columns[first_of[s] + r]` (-1: not a current item)."""

    channel: str
    index: SegmentedIndex
    first_of: np.ndarray  # by shard ordinal: its first row's place in `columns` (-1: not indexed)
    columns: np.ndarray  # int32
    candidates: int
    description: dict

    def search(self, vector: np.ndarray, k: int, cross_modal: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Give the query's candidate columns, in increasing order (the gallery's id order), and
        the index's score of each (re-scored: the rows' cosines). `cross_modal`: the query is of
        the other kind than the gallery's, and scans the lists set for those."""
        nprobe = self.description["cross_modal_nprobe"] if cross_modal else self.description["nprobe"]
        scores, ids = self.index.search(vector[None, :], max(k, self.candidates), nprobe)
        found = ids[0] >= 0
        shards, rows = split_ids(ids[0][found])
        known = (shards < len(self.first_of)) & (
            self.first_of[np.minimum(shards, len(self.first_of) - 1)] >= 0
        )
        columns = np.full(len(shards), -1, dtype=np.int64)
        columns[known] = self.columns[self.first_of[shards[known]] + rows[known]]  # -1 stays -1
        current = columns >= 0
        columns, values = columns[current], scores[0][found][current]
        order = np.argsort(columns, kind="stable")
        columns, values = columns[order], values[order]
        keep = np.concatenate([[True], columns[1:] != columns[:-1]]) if len(columns) else np.zeros(0, bool)
        return columns[keep], values[keep]

    def answer_note(self, cross_modal: bool = False) -> dict:
        """Give what an answer says of the search: approximate, by which index, its measured
        recall (on queries of the kind asked, where the index stage measured it)."""
        measured = self.description
        cross = measured.get("cross_modal") if cross_modal else None
        recall = cross or measured
        return {
            "exact": False,
            "index": measured["factory"],
            "nprobe": measured["cross_modal_nprobe" if cross_modal else "nprobe"],
            "rescored": measured["rescored"],
            "candidates": self.candidates,
            "recall@10": recall["recall@10"],
            "candidates_recall@10": recall["candidates_recall@10"],
            "recall_measured_on": "the task's queries" if cross else "gallery items",
        }


def read_description(path: Path) -> dict:
    """Give an index description (index.json) as describe_index wrote it."""
    return json.loads(path.read_text(encoding="utf-8"))


def read_gallery_index(
    finished: FinishedRun, gallery: str, channel: str, tag: str, ids: np.ndarray
) -> GalleryIndex | None:
    """Give a gallery's index when the run has one for `channel` (model `tag`), else None (an
    index described before its rows were written, too: the next run rebuilds it).
    `ids`: the gallery's current items, sorted (the server's columns)."""
    if gallery not in finished.indexes:
        return None
    run = finished.folder
    described = read_description(finished.indexes[gallery])
    measured = described.get("index")
    if not measured or described.get("model_tag") != tag or "rows" not in measured:
        return None
    index = SegmentedIndex(
        run / measured["trained"],
        [run / s for s in measured["segments"]],
        [run / r for r in measured["rows"]],
        measured["nprobe"],
        measured["rescored"],
    )
    current = current_items(finished.collections[gallery])  # one row an id
    ordinals = [int(number) for number, _ in measured["shards_indexed"]]
    tables = [pq.read_table(run / shard, columns=["id", "digest"]) for _, shard in measured["shards_indexed"]]
    rows = pa.concat_tables(tables) if tables else pa.table({"id": pa.array([], pa.string()), "digest": []})
    sizes = [len(table) for table in tables]
    # A row is a current item when the collection's current content of its id is the row's.
    known = places_among(rows.column("id"), current["id"])
    held = known >= 0
    digests = pc.take(pa.array(current["digest"]), pa.array(np.maximum(known, 0)))
    held &= pc.equal(digests, rows.column("digest")).to_numpy(zero_copy_only=False)
    columns = np.where(held, places_among(rows.column("id"), ids), -1).astype(np.int32)
    first_of = np.full(max(ordinals, default=-1) + 1, -1, dtype=np.int64)
    first_of[ordinals] = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else []
    return GalleryIndex(channel, index, first_of, columns, measured["candidates"], measured)


# Milvus's own limit on the hits one search gives (its topk), not a setting of the run.
MILVUS_TOP = 2**14


@dataclass
class MilvusGallery:
    """A gallery searched in a Milvus collection that `tuwen export milvus` filled."""

    channel: str
    client: Any  # a pymilvus MilvusClient
    name: str
    uri: str
    ids: np.ndarray  # the gallery's current items, sorted (the server's columns)
    candidates: int  # hits taken from Milvus per query (the run's index.candidates)
    keywords: bool = False  # its photos' text is indexed for Milvus's full-text search (BM25)

    def search(self, vector: np.ndarray, k: int, cross_modal: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Give the candidate columns in increasing order (current items only) and Milvus's scores
        (Milvus searches every kind of query alike)."""
        limit = min(max(k, self.candidates), MILVUS_TOP)
        found = self.client.search(self.name, data=[vector.astype(np.float32).tolist()], limit=limit)
        rows, scores = self._current_rows(found[0])
        order = np.argsort(rows, kind="stable")
        return rows[order], scores[order].astype(np.float32)

    def keyword_search(self, text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Give the columns of the `k` best items by Milvus's BM25 of `text` against the text
        read in them, best first (Milvus's order), with their BM25 scores."""
        from tuwen.export.milvus import OCR_SPARSE_FIELD

        limit = min(k, MILVUS_TOP)
        found = self.client.search(self.name, data=[text], anns_field=OCR_SPARSE_FIELD, limit=limit)
        rows, scores = self._current_rows(found[0])
        # Milvus Lite gives BM25 negated, best first; a server gives it as it is.
        return rows, np.abs(scores)

    def _current_rows(self, hits: list) -> tuple[np.ndarray, np.ndarray]:
        """Give the columns of Milvus's hits that are current items, in Milvus's order, and
        their distances (float64)."""
        ids = [hit["id"] for hit in hits]
        distances = np.array([hit["distance"] for hit in hits], dtype=np.float64)
        rows = find_sorted(self.ids, string_array(ids))
        valid = rows >= 0
        return rows[valid], distances[valid]

    def answer_note(self, cross_modal: bool = False) -> dict:
        where = "Milvus Lite" if not self.uri.startswith(("http://", "https://", "tcp://")) else "Milvus"
        return {"exact": False, "index": f"{where} collection {self.name}", "candidates": self.candidates}


def read_milvus_gallery(
    uri: str, prefix: str, gallery: str, channel: str, ids: np.ndarray, client, candidates: int
) -> MilvusGallery:
    """Give the gallery's Milvus collection (one the server found holding its channel's embeddings)."""
    from tuwen.export.milvus import holds_keywords, milvus_name

    name = milvus_name(prefix, gallery)
    client.load_collection(name)
    keywords = holds_keywords(client.describe_collection(name).get("properties", {}))
    return MilvusGallery(channel, client, name, uri, ids, candidates, keywords)
