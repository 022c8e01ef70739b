"""Snakemake entry point: each query's top-K by the fusion chosen on validation, every channel kept."""

import json
import logging

import pyarrow as pa

from tuwen.fusion import FusionSetting, fused_topk, load_task
from tuwen.logs import run_logged
from tuwen.models import ModelCard
from tuwen.parquet import write_table
from tuwen.settings import read_settings


def main(snakemake) -> None:
    task = snakemake.wildcards.task
    models = list(reversed(snakemake.params.stages))
    channels = load_task(dict(snakemake.input.items()), "", models)
    with open(snakemake.input.chosen, encoding="utf-8") as handle:
        chosen = json.load(handle)[task]
    setting = FusionSetting.from_dict(chosen)
    keep_top = read_settings(snakemake.input.settings)["retrieval"]["keep_top"]
    topk = fused_topk(channels, setting, keep_top)
    card = ModelCard.read(snakemake.input.cards[-1])
    write_table(
        pa.Table.from_pandas(topk, preserve_index=False),
        snakemake.output[0],
        {"logit_scale": channels.logit_scale, "model_tag": card.tag, "fusion": json.dumps(chosen)},
    )
    logging.info("%s: %s over %d x %d", task, chosen, len(channels.query_ids), len(channels.gallery_ids))


run_logged(main, snakemake)
