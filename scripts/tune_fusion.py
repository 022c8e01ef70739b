"""Snakemake entry point: choose channels, weights and re-ranking on fusion's validation task."""

import json
import logging

import pandas as pd

from tuwen.data.heldout import validation_positives
from tuwen.files.atomic import atomic_path, write_text_atomic
from tuwen.logs import run_logged
from tuwen.ranking.channels import read_task
from tuwen.ranking.fusion import query_groups
from tuwen.ranking.tuning import choose_recipe
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    fusion = read_settings(snakemake.input.settings)["fusion"]
    pairs = pd.read_parquet(snakemake.input.pairs)
    positives = validation_positives(pairs[pairs["status"] == "ok"])
    chosen, rows = {}, []
    for task, plan in snakemake.params.plan.items():
        channels = read_task(plan)
        groups = query_groups(channels.query_ids, len(channels.gallery_ids), fusion["validation_ratio"])
        choice = choose_recipe(task, channels, positives[task], groups, fusion, plan["ranking_channels"])
        chosen[task] = choice.chosen()
        rows += choice.rows()
        logging.info(
            "%s: %d queries x %d; p of each channel's R@10 by chance %s, combined: %s; "
            "%d recipes; chosen %s %s",
            task,
            len(channels.query_ids),
            len(channels.gallery_ids),
            {name: f"{p:.2g}" for name, p in choice.p_values.items()},
            choice.eligible,
            choice.tried,
            choice.winner.recipe.describe(),
            choice.winner.recall,
        )
    write_text_atomic(snakemake.output.chosen, json.dumps(chosen, indent=2) + "\n")
    with atomic_path(snakemake.output.table) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n")


run_logged(main, snakemake)
