"""Snakemake entry point: read the text in every image of one shard (PP-OCR)."""

import logging

from tuwen.logs import run_logged
from tuwen.run.settings import read_settings
from tuwen.text.ocr import OcrOptions, ocr_device, ocr_processes, ocr_shard


def main(snakemake) -> None:
    settings = read_settings(snakemake.input.settings)
    what = OcrOptions.from_settings(settings)
    # Processes and device are speed only: read from the config, not the settings file.
    processes = ocr_processes(snakemake.config["fusion"]["ocr_processes"], snakemake.threads)
    device = ocr_device(snakemake.config["fusion"]["ocr_device"])
    threads = max(1, snakemake.threads // processes)
    logging.info("OCR on %s, %d processes x %d threads, %s", device, processes, threads, what)
    table = ocr_shard(
        snakemake.input.shard_list,
        snakemake.output[0],
        settings["ingest"]["max_image_pixels"],
        what,
        threads,
        processes,
        device,
    )
    logging.info("OCR of %d images: %s", len(table), table["status"].value_counts().to_dict())


run_logged(main, snakemake)
