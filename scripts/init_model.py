"""Snakemake entry point: build a small CN-CLIP architecture with a fixed seed and save it."""

import logging

from tuwen.clip.architectures import architecture
from tuwen.clip.models import build_model, save_checkpoint
from tuwen.logs import run_logged


def main(snakemake) -> None:
    arch = architecture(snakemake.wildcards.arch)
    model = build_model(arch, int(snakemake.wildcards.seed))
    save_checkpoint(model, snakemake.output[0], arch)
    logging.info("random-initialised %s (seed %s) saved", arch.struct, snakemake.wildcards.seed)


run_logged(main, snakemake)
