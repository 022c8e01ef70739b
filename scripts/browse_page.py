"""Snakemake entry point: the static page that shows every query with its ranked hits."""

import json
import logging
from pathlib import Path

import pandas as pd

from tuwen.browse import make_thumbnails, page_data, write_page
from tuwen.evaluation import positives_by_query, read_ground_truth
from tuwen.ingest import accepted_captions
from tuwen.layout import IMAGES, TASKS
from tuwen.logs import run_logged
from tuwen.parquet import read_metadata
from tuwen.settings import read_settings


def main(snakemake) -> None:
    shown = snakemake.params.shown
    tasks = snakemake.params.tasks
    topk = {task: pd.read_parquet(path) for task, path in zip(tasks, snakemake.input.topk, strict=True)}
    # With fusion, the ranking score and its parts: the setting travels in topk's metadata.
    fusions = {
        task: json.loads(read_metadata(path)["fusion"])
        for task, path in zip(tasks, snakemake.input.topk, strict=True)
        if "fusion" in read_metadata(path)
    }
    captions = {
        task: accepted_captions(path) for task, path in zip(tasks, snakemake.input.captions, strict=True)
    }
    # Images on the page: the hits where the queries are captions, else the queries.
    shown_images = {
        task: set(table["query_id"])
        if TASKS[task].query_kind == IMAGES
        else set(table.loc[table["rank"] <= shown, "target_id"])
        for task, table in topk.items()
    }
    digests, wanted = {}, []
    for task, path in zip(tasks, snakemake.input.images, strict=True):
        images = pd.read_parquet(path, columns=["image_id", "path", "digest", "status"])
        images = images[(images["status"] == "ok") & images["image_id"].isin(shown_images[task])]
        digests[task] = images.drop_duplicates("image_id").set_index("image_id")["digest"]
        wanted.append(images[["path", "digest"]])
    folder = Path(snakemake.output.page).parent
    thumbnails = make_thumbnails(
        pd.concat(wanted),
        folder / "thumbs",
        read_settings(snakemake.input.settings)["browse"]["thumbnail_size"],
        workers=snakemake.threads,
    )
    positives = {}
    if snakemake.input.get("ground_truth"):
        truth = read_ground_truth(snakemake.input.ground_truth)
        positives = {task: positives_by_query(truth, task) for task in topk}
    write_page(page_data(topk, captions, digests, thumbnails, positives, shown, fusions), folder)
    logging.info(
        "page of %s queries; %d thumbnails",
        {task: table["query_id"].nunique() for task, table in topk.items()},
        len(thumbnails),
    )


run_logged(main, snakemake)
