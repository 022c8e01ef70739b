"""Snakemake entry point: the static page that shows every query with its ranked hits, and the
items of every collection no task searches."""

import json
import logging
from pathlib import Path

import pandas as pd

from tuwen.data.ingest import accepted_captions
from tuwen.files.parquet import read_metadata
from tuwen.logs import run_logged
from tuwen.ranking.recall import read_positives
from tuwen.report.browse import COLLECTION_TAB_ITEMS, make_thumbnails, page_data, write_page
from tuwen.run.declaration import IMAGES, GroundTruth
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    shown = snakemake.params.shown
    tasks = snakemake.params.tasks  # name: {query_kind, text_side, image_side}
    kinds = snakemake.params.collections  # every searchable collection: its kind
    manifests = dict(zip(kinds, snakemake.input.collections, strict=True))
    topk = {task: pd.read_parquet(path) for task, path in zip(tasks, snakemake.input.topk, strict=True)}
    # With fusion, the ranking score and its parts: the setting travels in topk's metadata.
    fusions = {
        task: json.loads(read_metadata(path)["fusion"])
        for task, path in zip(tasks, snakemake.input.topk, strict=True)
        if "fusion" in read_metadata(path)
    }
    searched = {side for spec in tasks.values() for side in (spec["text_side"], spec["image_side"])}
    tabs = {name: kind for name, kind in kinds.items() if name not in searched}
    captions = {task: accepted_captions(manifests[spec["text_side"]]) for task, spec in tasks.items()}
    captions.update(
        {name: accepted_captions(manifests[name]) for name, kind in tabs.items() if kind != IMAGES}
    )
    # Images on the page: the hits where the queries are captions, else the queries.
    shown_images = {
        task: set(table["query_id"])
        if tasks[task]["query_kind"] == IMAGES
        else set(table.loc[table["rank"] <= shown, "target_id"])
        for task, table in topk.items()
    }
    image_sides = {task: spec["image_side"] for task, spec in tasks.items()}
    collection_items = {}
    for name, kind in tabs.items():
        table = pd.read_parquet(manifests[name])
        column = "image_id" if kind == IMAGES else "text_id"
        ids = table.loc[table["status"] == "ok", column].drop_duplicates().tolist()
        collection_items[name] = (kind, ids)
        if kind == IMAGES:
            shown_images[name] = set(sorted(ids)[:COLLECTION_TAB_ITEMS])
            image_sides[name] = name
    digests, wanted = {}, []
    for key, side in image_sides.items():
        images = pd.read_parquet(manifests[side], columns=["image_id", "path", "digest", "status"])
        images = images[(images["status"] == "ok") & images["image_id"].isin(shown_images[key])]
        digests[key] = images.drop_duplicates("image_id").set_index("image_id")["digest"]
        wanted.append(images[["path", "digest"]])
    folder = Path(snakemake.output.page).parent
    thumbnails = make_thumbnails(
        pd.concat(wanted) if wanted else pd.DataFrame(columns=["path", "digest"]),
        folder / "thumbs",
        read_settings(snakemake.input.settings)["browse"]["thumbnail_size"],
        workers=snakemake.threads,
    )
    positives = {}
    if snakemake.input.get("ground_truth_settings"):
        truths = read_settings(snakemake.input.ground_truth_settings)["ground_truth"]
        positives = {task: read_positives(GroundTruth(**truth)) for task, truth in truths.items()}
    query_kinds = {task: spec["query_kind"] for task, spec in tasks.items()}
    data = page_data(
        topk, captions, digests, thumbnails, positives, shown, fusions, query_kinds, collection_items
    )
    if snakemake.params.notice:
        data["notice"] = snakemake.params.notice
    write_page(data, folder)
    logging.info(
        "page of %s queries, %s collection items; %d thumbnails",
        {task: table["query_id"].nunique() for task, table in topk.items()},
        {name: len(ids) for name, (_, ids) in collection_items.items()},
        len(thumbnails),
    )


run_logged(main, snakemake)
