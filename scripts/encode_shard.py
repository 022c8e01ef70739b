"""Snakemake entry point: encode one shard of images or captions into a feature shard."""

import logging

import torch

from tuwen.encode import encode_shard
from tuwen.errors import TuwenError
from tuwen.logs import run_logged
from tuwen.models import ModelCard


def main(snakemake) -> None:
    torch.set_num_threads(snakemake.threads)
    # Batch size, workers and device change speed, not embeddings: read from the config, not
    # params, so changing them does not trigger re-encoding every shard.
    settings = snakemake.config["encode"]
    kind = "image" if hasattr(snakemake.wildcards, "col") else "text"
    card = ModelCard.read(snakemake.input.card)
    if card.tag != snakemake.wildcards.model:
        raise TuwenError(
            f"features of model {snakemake.wildcards.model} were asked for, but the configured model is "
            f"{card.tag}; features of different models are never mixed"
        )
    workers = snakemake.threads if settings["num_workers"] == "auto" else settings["num_workers"]
    logging.info("%d threads, %d decode workers", snakemake.threads, workers)
    encoded = encode_shard(
        snakemake.input.shard_list,
        snakemake.input.card,
        snakemake.output[0],
        kind,
        device=settings["device"],
        batch_size=settings["batch_size"],
        num_workers=workers,
        max_pixels=snakemake.config["ingest"]["max_image_pixels"],
        jpeg_draft=settings["jpeg_draft"],
        gpu_jpeg_decode=settings["gpu_jpeg_decode"],
    )
    logging.info("encoded %d %ss", len(encoded.ids), kind)
    for item_id, code, reason in encoded.skipped:
        logging.warning("not encoded: %s (%s: %s)", item_id, code, reason)


run_logged(main, snakemake)
