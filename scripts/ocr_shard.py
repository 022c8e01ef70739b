"""Snakemake entry point: read the text in every image of one shard (PP-OCR)."""

import logging

from tuwen.logs import run_logged
from tuwen.ocr import ocr_engine, ocr_shard
from tuwen.settings import read_settings


def main(snakemake) -> None:
    # The device is speed only: read from the config, not params (see config.schema.yaml).
    engine = ocr_engine(snakemake.threads, snakemake.config["fusion"]["ocr_device"])
    max_pixels = read_settings(snakemake.input.settings)["ingest"]["max_image_pixels"]
    table = ocr_shard(snakemake.input.shard_list, snakemake.output[0], engine, max_pixels)
    logging.info("OCR of %d images: %s", len(table), table["status"].value_counts().to_dict())


run_logged(main, snakemake)
