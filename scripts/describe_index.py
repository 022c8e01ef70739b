"""Snakemake entry point: what the server reads of a gallery's index, with its measured recall."""

import json
import logging
from pathlib import Path

from tuwen.data.shards import shard_number
from tuwen.files.atomic import write_text_atomic
from tuwen.files.parquet import read_metadata, row_count
from tuwen.logs import run_logged
from tuwen.ranking.index import IndexOptions, describe
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    settings = read_settings(snakemake.input.settings)["index"]
    items = row_count(snakemake.input.assignment)
    description = {"collection": snakemake.wildcards.col, "items": items, "settings": settings}
    if hasattr(snakemake.input, "trained"):
        gallery = list([(shard_number(path), path) for path in snakemake.input.features])
        queries = list(snakemake.input.get("queries", []))
        options = IndexOptions.from_config(settings)
        measured = describe(
            snakemake.input.trained,
            snakemake.input.segments,
            snakemake.input.rows,
            gallery,
            queries,
            options,
            Path.cwd(),
        )
        description |= {"index": measured, "model_tag": read_metadata(gallery[0][1])["model_tag"]}
        logging.info("%s: recall@10 %s", snakemake.wildcards.col, measured["recall@10"])
    else:
        description |= {
            "index": None,
            "why": f"{items} items, under index.min_items ({settings['min_items']})",
        }
    write_text_atomic(snakemake.output[0], json.dumps(description, ensure_ascii=False, indent=1) + "\n")


run_logged(main, snakemake)
