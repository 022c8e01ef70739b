"""Snakemake entry point: choose channels, weights and re-ranking on fusion's validation task."""

import json
import logging

import pandas as pd

from tuwen.data.heldout import validation_positives
from tuwen.files.atomic import atomic_path, write_text_atomic
from tuwen.logs import run_logged
from tuwen.ranking.channels import read_task
from tuwen.ranking.fusion import (
    best_per_label,
    chance_p_values,
    eligible_channels,
    query_groups,
    search_settings,
)
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    fusion = read_settings(snakemake.input.settings)["fusion"]
    # Re-ranking is a part of fusion; several models alone are combined without it.
    temperatures = fusion["temperatures"] if fusion["enabled"] else []
    pairs = pd.read_parquet(snakemake.input.pairs)
    positives = validation_positives(pairs[pairs["status"] == "ok"])
    chosen, rows = {}, []
    for task, plan in snakemake.params.plan.items():
        channels = read_task(plan)
        groups = query_groups(channels.query_ids, len(channels.gallery_ids), fusion["validation_ratio"])
        p_values = chance_p_values(channels, positives[task], groups)
        eligible = eligible_channels(p_values, fusion["chance_alpha"])
        evaluated = search_settings(
            channels,
            fusion["weights"],
            temperatures,
            positives[task],
            groups,
            plan["ranking_channels"],
            eligible,
        )
        best = best_per_label(evaluated)
        # First of equals: the simplest. A channel at chance level is shown alone, never chosen.
        winner = max(
            (item for item in best.values() if set(item.setting.used) <= set(eligible)),
            key=lambda item: item.mean,
        )
        chosen[task] = {
            "label": winner.setting.label,
            **winner.setting.describe(),
            "chance_p": p_values,
            "eligible": eligible,
        }
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
            "%s: %d queries x %d; p of each channel's R@10 by chance %s, combined: %s; "
            "%d settings; chosen %s %s",
            task,
            len(channels.query_ids),
            len(channels.gallery_ids),
            {name: f"{p:.2g}" for name, p in p_values.items()},
            eligible,
            len(evaluated),
            winner.setting.describe(),
            winner.recall,
        )
    write_text_atomic(snakemake.output.chosen, json.dumps(chosen, indent=2) + "\n")
    with atomic_path(snakemake.output.table) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n")


run_logged(main, snakemake)
