"""Snakemake entry point: choose channels, weights and re-ranking on fusion's validation task."""

import json
import logging

import pandas as pd

from tuwen.atomic import atomic_path, write_text_atomic
from tuwen.fusion import best_per_label, candidate_settings, evaluate_settings, load_task, query_groups
from tuwen.logs import run_logged
from tuwen.settings import read_settings
from tuwen.validation import validation_positives


def main(snakemake) -> None:
    files = dict(snakemake.input.items())
    fusion = read_settings(files["settings"])["fusion"]
    # The model that encodes for retrieval first: its cosine is the tables' `cosine`.
    models = list(reversed(snakemake.params.stages))
    pairs = pd.read_parquet(files["pairs"])
    positives = validation_positives(pairs[pairs["status"] == "ok"])
    chosen, rows = {}, []
    for task in ("t2i", "i2t"):
        channels = load_task(files, f"{task}_", models)
        groups = query_groups(channels.query_ids, len(channels.gallery_ids), fusion["validation_ratio"])
        settings = candidate_settings(channels.names, fusion["weights"], fusion["temperatures"])
        best = best_per_label(evaluate_settings(channels, settings, positives[task], groups))
        winner = max(best.values(), key=lambda item: item.mean)  # first of equals: the simplest
        chosen[task] = {"label": winner.setting.label, **winner.setting.describe()}
        for label, item in best.items():
            rows.append(
                {
                    "split": "validation",
                    "task": task,
                    "channels": label,
                    **item.recall,
                    "weights": json.dumps(dict(item.setting.weights)),
                    "temperature": item.setting.temperature,
                    "chosen": item is winner,
                }
            )
        logging.info(
            "%s: %d queries x %d, %d settings; chosen %s %s",
            task,
            len(channels.query_ids),
            len(channels.gallery_ids),
            len(settings),
            winner.setting.describe(),
            winner.recall,
        )
    write_text_atomic(snakemake.output.chosen, json.dumps(chosen, indent=2) + "\n")
    with atomic_path(snakemake.output.table) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n")


run_logged(main, snakemake)
