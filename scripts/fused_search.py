"""Snakemake entry point: each query's top-K by the fusion chosen on validation, every channel
kept, and the query bank that ranks a single query the same way (tuwen.ranking.scoring)."""

import json
import logging

import pyarrow as pa

from tuwen.files.parquet import write_table
from tuwen.logs import run_logged
from tuwen.ranking.channels import channel_tags, read_task
from tuwen.ranking.fusion import fused_topk, query_bank
from tuwen.ranking.scoring import FusionRecipe, bank_table
from tuwen.run.settings import hits_kept, read_settings


def main(snakemake) -> None:
    task, plan = snakemake.wildcards.task, snakemake.params.plan
    channels = read_task(plan)
    with open(snakemake.input.chosen, encoding="utf-8") as handle:
        chosen = json.load(handle)[plan["direction"]]
    recipe = FusionRecipe.from_dict(chosen)
    keep_top = hits_kept(read_settings(snakemake.input.settings), read_settings(snakemake.input.task))
    bank = query_bank(channels, recipe)
    topk = fused_topk(channels, recipe, keep_top, bank=bank)
    ranking_tag = next(iter(channel_tags(plan).values()))
    metadata = {"logit_scale": channels.logit_scale, "model_tag": ranking_tag, "fusion": json.dumps(chosen)}
    write_table(pa.Table.from_pandas(topk, preserve_index=False), snakemake.output.topk, metadata)
    bank_metadata = {"temperature": recipe.temperature, "queries": len(channels.query_ids)}
    write_table(
        pa.Table.from_pandas(bank_table(bank), preserve_index=False), snakemake.output.bank, bank_metadata
    )
    logging.info("%s: %s over %d x %d", task, chosen, len(channels.query_ids), len(channels.gallery_ids))


run_logged(main, snakemake)
