"""Snakemake entry point: load a sentence encoder once and record what it is (its card)."""

import json
import logging

from tuwen.files.atomic import write_text_atomic
from tuwen.logs import run_logged
from tuwen.text.sentences import load_sentence_encoder


def main(snakemake) -> None:
    encoder = load_sentence_encoder(snakemake.wildcards.encoder, snakemake.config["weights_dir"])
    card = {"name": encoder.name, "version": encoder.version, "dim": encoder.dim, "tag": encoder.tag}
    if encoder.weights_dir:  # so that the server loads the same weights
        card["weights_dir"] = encoder.weights_dir
    write_text_atomic(snakemake.output.card, json.dumps(card, indent=2) + "\n")
    logging.info("sentence encoder %s", card)


run_logged(main, snakemake)
