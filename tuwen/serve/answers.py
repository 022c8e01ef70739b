"""The JSON answer to a search: the query, how it was ranked, and each hit with its parts."""

from __future__ import annotations

from dataclasses import dataclass

from tuwen.finished.reader import Channel
from tuwen.ranking.scoring import Hit, Ranking
from tuwen.run.declaration import TEXTS
from tuwen.serve.loading import LoadedCollection


@dataclass
class Query:
    """One query, ready to rank: its embedding per channel, its text for the OCR channel,
    the run's id for it when it is one of the run's items (for ground truth), and its kind."""

    kind: str
    label: str
    vectors: dict
    text: str = ""
    known_id: str | None = None
    known_in: str | None = None
    encode_ms: float = 0.0  # decoding, reading its text and embedding it (0: a stored item's)


def ranked_by(ranking: Ranking, channels: dict[str, Channel]) -> str:
    """Give what ranked: the fusion recipe's label, a sentence channel, or `cosine` (a model's)."""
    if ranking.recipe is not None:
        return ranking.recipe.label
    return ranking.channel if channels[ranking.channel].sentence else "cosine"


def answer(
    query: Query,
    gallery: LoadedCollection,
    ids,
    ranking: Ranking,
    channels: dict[str, Channel],
    hits: list[Hit],
    search: dict,
    truth: set[str] | None,
    loaded_at: float,
) -> dict:
    """Give the answer as JSON-ready data; `ids[hit.column]` is a hit's id, `search` says how the
    gallery was searched (exact, or which index and what it measured)."""
    sentence = channels[ranking.channel].sentence
    result = {
        "query": {"kind": query.kind, "text" if query.kind == TEXTS else "image": query.label},
        "gallery": gallery.name,
        "model": channels[ranking.channel].tag,
        "ranked_by": ranked_by(ranking, channels),
        "not_applied": ranking.missing(),
        "exact": search["exact"],
        "search": search,
        "loaded_at": loaded_at,
        "hits": [],
    }
    if query.known_id is not None:
        result["query"]["id"] = query.known_id
        result["query"]["collection"] = query.known_in
    for hit in hits:
        item_id = str(ids[hit.column])
        item = {"rank": hit.rank, "id": item_id, "score": round(hit.score, 6), "cosine": round(hit.cosine, 6)}
        if hit.parts:
            item["parts"] = [[name, round(value, 6)] for name, value in hit.parts]
        elif sentence:
            item["parts"] = [[ranking.channel, round(hit.score, 6)]]
        if hit.found_by:
            item["found_by"] = dict(hit.found_by)
        if gallery.holds_images:
            item["image"] = f"/image/{gallery.name}/{item_id}"
        else:
            item["caption"] = gallery.captions.get(item_id, "")
        if truth is not None:
            item["correct"] = item_id in truth
        result["hits"].append(item)
    return result
