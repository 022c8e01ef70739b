"""Snakemake entry point: scan one image folder into its manifest and rejects report."""

import logging

from tuwen.ingest import (
    IMAGE_MANIFEST_SCHEMA,
    rejects_of,
    scan_image_folder,
    status_counts,
    write_manifest,
    write_rejects,
)
from tuwen.logs import run_logged


def main(snakemake) -> None:
    folder = snakemake.input.folder
    manifest = scan_image_folder(folder, snakemake.params.max_pixels, workers=snakemake.threads)
    write_manifest(manifest, snakemake.output.manifest, IMAGE_MANIFEST_SCHEMA)
    write_rejects(rejects_of(manifest, "image_id", folder), snakemake.output.rejects)
    logging.info("%s: %s", folder, status_counts(manifest))


run_logged(main, snakemake)
