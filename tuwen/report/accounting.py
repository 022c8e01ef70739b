"""Accounting: every input id is encoded, rejected or ignored, and every query has results."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

from tuwen.files.parquet import FeatureShard


def collection_account(
    name: str, manifest: pd.DataFrame, id_column: str, shards: list[FeatureShard] | None
) -> dict:
    """Give the counts of one collection: inputs = accepted + rejected + ignored.

    For a collection the run encodes (`shards` given), accepted = encoded + not encoded;
    for one it only validates (the training pairs when nothing trains), encoded is empty.
    `id_column` names the manifest's ids (tuwen.run.layout.Collection.id_column).
    """
    accepted = manifest[manifest["status"] == "ok"]
    wanted = set(accepted[id_column])
    encoded = {item_id for shard in shards for item_id in shard.ids} & wanted if shards is not None else None
    reasons = manifest.loc[manifest["status"] != "ok", "reason_code"].value_counts().sort_index()
    return {
        "collection": name,
        "inputs": len(manifest),
        "accepted": len(accepted),
        "encoded": len(encoded) if encoded is not None else None,
        "not_encoded": len(wanted - encoded) if encoded is not None else None,
        "rejected": int((manifest["status"] == "rejected").sum()),
        "ignored": int((manifest["status"] == "ignored").sum()),
        "reasons": "; ".join(f"{code}={count}" for code, count in reasons.items()),
        "truncated_captions": _truncated(accepted),
    }


NOT_ENCODED_COLUMNS = ["collection", "id", "reason_code", "reason"]


def not_encoded_report(
    name: str, manifest: pd.DataFrame, id_column: str, shards: list[FeatureShard]
) -> pd.DataFrame:
    """Give the accepted items of a collection that no feature shard holds, each with its reason.

    Reasons come from the shards' own record of what their encode job could not decode.
    """
    wanted = manifest.loc[manifest["status"] == "ok", id_column].tolist()
    encoded = {item_id for shard in shards for item_id in shard.ids}
    reasons = encode_failures(shards)
    rows = [(name, item_id, *reasons[item_id]) for item_id in wanted if item_id not in encoded]
    return pd.DataFrame(rows, columns=NOT_ENCODED_COLUMNS)


def encode_failures(shards: list[FeatureShard]) -> defaultdict[str, tuple[str, str]]:
    """Give id -> (reason code, sentence) of items the shards' encode jobs could not encode."""
    fallback = ("not_encoded", "accepted at ingest but no feature shard holds it; see the encode logs")
    reasons: defaultdict[str, tuple[str, str]] = defaultdict(lambda: fallback)
    for shard in shards:
        for row in shard.metadata.get("not_encoded", []):
            reasons[row["id"]] = (row["reason_code"], row["reason"])
    return reasons


def _truncated(accepted: pd.DataFrame) -> int | None:
    # Captions over cn_clip's 52-token context are kept; the model reads their start only.
    if "truncated" not in accepted.columns:
        return None
    return int(accepted["truncated"].sum())


def query_account(
    task: str, queries: pd.DataFrame, id_column: str, topk: pd.DataFrame, unencoded: pd.DataFrame
) -> dict:
    """Give the counts of one direction's queries: inputs = with results + rejected + unencoded."""
    answered = set(topk["query_id"])
    accepted = queries.loc[queries["status"] == "ok", id_column]
    return {
        "collection": f"{task} queries",
        "inputs": len(queries),
        "accepted": len(accepted),
        "encoded": int(accepted.isin(answered).sum()),
        "not_encoded": len(unencoded),
        "rejected": int((queries["status"] != "ok").sum()),
        "ignored": 0,
        "reasons": "; ".join(
            f"{c}={n}"
            for c, n in queries.loc[queries["status"] != "ok", "reason_code"]
            .value_counts()
            .sort_index()
            .items()
        ),
    }


OCR_FAILURE_COLUMNS = ["collection", "id", "reason"]


def ocr_account(name: str, shards: list[pd.DataFrame]) -> tuple[dict, pd.DataFrame]:
    """Give the OCR counts of one collection (images with text, without, failed) and its
    failures, each naming the file and why: those images have no text in the fusion."""
    table = (
        pd.concat(shards, ignore_index=True) if shards else pd.DataFrame(columns=["id", "status", "reason"])
    )
    counts = table["status"].value_counts()
    failed = table[table["status"] == "failed"]
    row = {
        "collection": name,
        "images": len(table),
        "with_text": int(counts.get("ok", 0)),
        "without_text": int(counts.get("empty", 0)),
        "failed": int(counts.get("failed", 0)),
    }
    return row, pd.DataFrame({"collection": name, "id": failed["id"], "reason": failed["reason"]})
