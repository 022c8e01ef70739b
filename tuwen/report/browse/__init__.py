"""A static page to browse a run's results: every query with its ranked hits, from disk.

`results/browse/index.html` opens from the file system (no server): it loads its data
from `data.js` (a file:// page may not fetch JSON) and shows image hits and image
queries as small thumbnails in `thumbs/`, made once per image content (named by digest)
and kept between runs. Captions and ids are user data: the page sets them as text
only, and `data.js` escapes `<`, so no caption can become markup or end a script.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

import pandas as pd

from tuwen.files.atomic import write_text_atomic
from tuwen.files.images import ImageRejected, load_image
from tuwen.ranking.scoring import FusionRecipe, table_row_parts
from tuwen.run.declaration import IMAGES, TEXTS

PAGE_FILES = ("index.html", "browse.js", "browse.css", "parts.js")
DIRECTION_TITLES = {TEXTS: "文本 → 图像", IMAGES: "图像 → 文本"}
KIND_TITLES = {IMAGES: "图像", TEXTS: "文本"}
# A collection no task searches gets a tab of its items, the first this many (ids sorted).
COLLECTION_TAB_ITEMS = 2000


def task_title(task: str, query_kind: str) -> str:
    """Give a task's tab title: the contest's directions by their kind, a declared task by its name too."""
    from tuwen.run.declaration import DIRECTION_OF

    title = DIRECTION_TITLES[query_kind]
    return title if task == DIRECTION_OF[query_kind] else f"{task}: {title}"


def thumbnail_name(digest: str, size: int) -> str:
    """Give a thumbnail's file name in `thumbs/`: one per image content and size, shared by ids."""
    return f"{digest[:24]}-{size}.jpg"


def _make_thumbnail(job: tuple[str, str, int]) -> str | None:
    source, target, size = job
    try:
        image, _ = load_image(source, None, draft_size=size)  # accepted at ingest
    except ImageRejected as rejected:
        return rejected.message
    image.thumbnail((size, size))
    partial = f"{target}.{os.getpid()}.part"
    image.save(partial, "JPEG", quality=80)
    os.replace(partial, target)
    return None


def make_thumbnails(images: pd.DataFrame, folder: str | os.PathLike, size: int, workers: int = 1) -> dict:
    """Make the missing thumbnails of `images` (columns path, digest) in `folder`.

    Gives {digest: file name} for every image that has one; a file that cannot be decoded
    gets none (the page shows its id instead). Existing thumbnails are not read again.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unique = images.drop_duplicates("digest")
    wanted = {d: thumbnail_name(d, size) for d in unique["digest"]}
    missing = [
        (p, str(folder / wanted[d]), size) for p, d in zip(unique["path"], unique["digest"], strict=True)
    ]
    missing = [job for job in missing if not Path(job[1]).exists()]
    if workers > 1 and len(missing) > 64:
        with ProcessPoolExecutor(workers) as pool:
            failures = list(pool.map(_make_thumbnail, missing, chunksize=64))
    else:
        failures = [_make_thumbnail(job) for job in missing]
    failed = {Path(job[1]).name for job, failure in zip(missing, failures, strict=True) if failure}
    return {d: name for d, name in wanted.items() if name not in failed}


def page_data(
    topk: dict[str, pd.DataFrame],
    captions: dict[str, dict[str, str]],
    image_digests: dict[str, pd.Series],
    thumbnails: dict[str, str],
    positives: dict[str, dict[str, set[str]]],
    shown: int,
    fusions: dict[str, dict] | None = None,
    query_kinds: dict[str, str] | None = None,
    collections: dict[str, tuple[str, list[str]]] | None = None,
) -> dict:
    """Give the page's data: per direction, every query in rank tables' order with its hits.

    `captions[task]` maps text ids to captions, `image_digests[task]` image ids to digests
    (for thumbnails), `positives[task]` query ids to true targets (empty: no ground truth).
    Each hit shows the score that ranks it: the cosine, or with `fusions[task]` (the
    setting chosen on validation, from topk.parquet's metadata) the fused score, with
    the parts it is made of. `query_kinds[task]` is the kind of a task's queries; each of
    `collections` (name: kind and item ids; captions and digests under its name) that no
    task searches gets a tab of its items, without hits.
    """
    tasks = {}
    for task, table in topk.items():
        text_is_query = (query_kinds or {}).get(task, TEXTS) == TEXTS
        truth = positives.get(task, {})
        chosen = (fusions or {}).get(task)
        setting = FusionRecipe.from_dict(chosen) if chosen else None
        queries = []
        ordered = table[table["rank"] <= shown].sort_values(["query_id", "rank"], kind="stable")
        for query_id, group in ordered.groupby("query_id", sort=False):
            known = truth.get(query_id)
            hits = []
            for row in group.to_dict("records"):
                hit = {
                    "id": row["target_id"],
                    "rank": int(row["rank"]),
                    "cosine": round(float(row["cosine"]), 4),
                    "score": round(float(row["score" if setting else "cosine"]), 4),
                }
                if setting:
                    hit["parts"] = [[name, round(value, 4)] for name, value in table_row_parts(row, setting)]
                hit.update(
                    _item(
                        row["target_id"], not text_is_query, captions[task], image_digests[task], thumbnails
                    )
                )
                if known is not None:
                    hit["correct"] = row["target_id"] in known
                hits.append(hit)
            query = {"id": query_id, "hits": hits, "has_truth": known is not None}
            query.update(_item(query_id, text_is_query, captions[task], image_digests[task], thumbnails))
            queries.append(query)
        tasks[task] = {"title": task_title(task, TEXTS if text_is_query else IMAGES), "queries": queries}
    for name, (kind, ids) in (collections or {}).items():
        listed = sorted(ids)[:COLLECTION_TAB_ITEMS]
        items = [
            {"id": item, "hits": [], "has_truth": False}
            | _item(
                item, kind == TEXTS, captions.get(name, {}), image_digests.get(name, pd.Series()), thumbnails
            )
            for item in listed
        ]
        more = f", the first {len(listed)} of {len(ids)}" if len(ids) > len(listed) else ""
        tasks[f"collection-{name}"] = {"title": f"{name} ({KIND_TITLES[kind]}{more})", "queries": items}
    return {"tasks": tasks, "shown": shown}


def _item(
    item_id: str, is_text: bool, captions: dict[str, str], digests: pd.Series, thumbnails: dict
) -> dict:
    if is_text:
        return {"text": str(captions.get(item_id, ""))}
    digest = digests.get(item_id)
    return {"thumb": f"thumbs/{thumbnails[digest]}"} if digest in thumbnails else {"thumb": None}


def data_script(data: dict) -> str:
    """Give `data.js`: the data as a JavaScript literal that no caption can break out of."""
    literal = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # JSON is valid JavaScript; "<" is escaped so that "</script>" or "<!--" in a caption
    # stays text even if this literal is ever inlined into the HTML.
    literal = literal.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f"window.TUWEN_BROWSE = {literal};\n"


def write_page(data: dict, folder: str | os.PathLike) -> None:
    """Write the page (index.html, its script and style) and its data into `folder`."""
    folder = Path(folder)
    for name in PAGE_FILES:
        write_text_atomic(folder / name, (resources.files(__name__) / name).read_text(encoding="utf-8"))
    write_text_atomic(folder / "data.js", data_script(data))
