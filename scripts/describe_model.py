"""Snakemake entry point: name a model's weights (fetching released ones) in its model card."""

import json
import logging

from tuwen.clip.architectures import architecture
from tuwen.clip.cards import ModelCard, weights_tag
from tuwen.clip.models import checkpoint_digest, fetch_pretrained
from tuwen.files.atomic import write_text_atomic
from tuwen.logs import run_logged
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    settings = read_settings(snakemake.input.settings)
    name, int8 = settings["model"]["name"], settings["encode"]["int8"]
    arch = architecture(name)
    if snakemake.input.get("checkpoint"):
        checkpoint = snakemake.input.checkpoint
    else:
        # Where the weights are kept changes no result: read from the config, not a setting.
        checkpoint = str(fetch_pretrained(name, snakemake.config["weights_dir"]))
    digest = checkpoint_digest(checkpoint, arch)
    card = ModelCard(weights_tag(arch.name, digest, int8), arch.name, checkpoint, digest, int8)
    write_text_atomic(snakemake.output.card, json.dumps(card.as_dict(), indent=2) + "\n")
    logging.info("model %s: %s", card.tag, checkpoint)


run_logged(main, snakemake)
