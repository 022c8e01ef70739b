"""Snakemake entry point: export a model stage's two towers to ONNX, and check them."""

import logging
from pathlib import Path

import torch

from tuwen.clip.cards import ModelCard
from tuwen.clip.models import load_model
from tuwen.clip.onnx_towers import export_model_towers
from tuwen.logs import run_logged


def main(snakemake) -> None:
    torch.set_num_threads(snakemake.threads)
    card = ModelCard.read(snakemake.input.card)
    model = load_model(card.arch, card.checkpoint, "cpu")
    towers = export_model_towers(model, card, Path(snakemake.output.towers).parent)
    logging.info(
        "%s: %s towers, cosine to torch %s (exact: %s)",
        card.tag,
        towers["precision"],
        towers["cosine_to_torch"],
        towers["exact"],
    )


run_logged(main, snakemake)
