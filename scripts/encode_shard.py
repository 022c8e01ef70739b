"""Snakemake entry point: encode one shard of images or captions into a feature shard."""

import logging

import torch

from tuwen.clip.cards import ModelCard
from tuwen.clip.encode import encode_shard
from tuwen.errors import TuwenError
from tuwen.logs import run_logged
from tuwen.run.declaration import IMAGES
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    torch.set_num_threads(snakemake.threads)
    # Batch size, workers and device change speed, not embeddings: read from the config, so
    # that changing them re-encodes nothing. What changes embeddings comes as the settings file.
    speed = snakemake.config["encode"]
    kind = snakemake.params.kind
    results = read_settings(snakemake.input.settings) if kind == IMAGES else None
    card = ModelCard.read(snakemake.input.card)
    if card.tag != snakemake.wildcards.tag:
        raise TuwenError(
            f"features of model {snakemake.wildcards.tag} were asked for, but the configured model is "
            f"{card.tag}; features of different models are never mixed"
        )
    workers = snakemake.threads if speed["num_workers"] == "auto" else speed["num_workers"]
    logging.info("%d threads, %d decode workers", snakemake.threads, workers)
    encoded = encode_shard(
        snakemake.input.shard_list,
        snakemake.input.card,
        snakemake.output[0],
        kind,
        device=speed["device"],
        batch_size=speed["batch_size"],
        num_workers=workers,
        towers=snakemake.input.towers,
        backend=speed["backend"],
        **(image_settings(results) if results else {}),
    )
    logging.info("encoded %d %s", len(encoded.ids), kind)
    for item_id, code, reason in encoded.skipped:
        logging.warning("not encoded: %s (%s: %s)", item_id, code, reason)


def image_settings(settings: dict) -> dict:
    """Give encode_shard's keywords for the settings that change image embeddings."""
    return {
        "max_pixels": settings["ingest"]["max_image_pixels"],
        "jpeg_draft": settings["encode"]["jpeg_draft"],
        "gpu_jpeg_decode": settings["encode"]["gpu_jpeg_decode"],
    }


run_logged(main, snakemake)
