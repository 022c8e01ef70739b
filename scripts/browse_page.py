"""Snakemake entry point: the static page that shows every query with its ranked hits."""

import logging
from pathlib import Path

import pandas as pd

from tuwen.browse import make_thumbnails, page_data, write_page
from tuwen.evaluation import positives_by_query, read_ground_truth
from tuwen.ingest import accepted_captions
from tuwen.logs import run_logged
from tuwen.settings import read_settings


def main(snakemake) -> None:
    shown = snakemake.params.shown
    topk = {
        task: pd.read_parquet(path) for task, path in zip(("t2i", "i2t"), snakemake.input.topk, strict=True)
    }
    captions = {
        "t2i": accepted_captions(snakemake.input.t2i_captions),
        "i2t": accepted_captions(snakemake.input.i2t_captions),
    }
    # Images on the page: the hits of text → image and the queries of image → text.
    shown_images = {
        "t2i": set(topk["t2i"].loc[topk["t2i"]["rank"] <= shown, "target_id"]),
        "i2t": set(topk["i2t"]["query_id"]),
    }
    digests, wanted = {}, []
    for task, path in (("t2i", snakemake.input.t2i_images), ("i2t", snakemake.input.i2t_images)):
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
    write_page(page_data(topk, captions, digests, thumbnails, positives, shown), folder)
    logging.info(
        "page of %s queries; %d thumbnails",
        {task: table["query_id"].nunique() for task, table in topk.items()},
        len(thumbnails),
    )


run_logged(main, snakemake)
