"""Snakemake entry point: name a model's weights (fetching released ones) in its model card."""

import json
import logging

from tuwen.atomic import write_text_atomic
from tuwen.logs import run_logged
from tuwen.models import ModelCard, architecture, checkpoint_digest, fetch_pretrained, model_tag


def main(snakemake) -> None:
    name = snakemake.params.model
    arch = architecture(name)
    if snakemake.input.get("checkpoint"):
        checkpoint = snakemake.input.checkpoint
    else:
        checkpoint = str(fetch_pretrained(name, snakemake.params.weights_dir))
    digest = checkpoint_digest(checkpoint, arch)
    card = ModelCard(model_tag(arch.name, digest), arch.name, checkpoint, digest)
    write_text_atomic(snakemake.output.card, json.dumps(card.as_dict(), indent=2) + "\n")
    logging.info("model %s: %s", card.tag, checkpoint)


run_logged(main, snakemake)
