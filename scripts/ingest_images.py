"""Snakemake entry point: scan one image folder into its manifest and rejects report."""

import logging

from tuwen.data.ingest import (
    IMAGE_MANIFEST_SCHEMA,
    read_scan_cache,
    rejects_of,
    scan_image_source,
    status_counts,
    write_manifest,
    write_rejects,
    write_scan_cache,
)
from tuwen.logs import run_logged
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    folder = snakemake.input.folder
    ingest = read_settings(snakemake.input.settings)["ingest"]
    settings = {
        "max_pixels": ingest["max_image_pixels"],
        "verify_decode": ingest["verify_decode"] or snakemake.params.always_verify_decode,
    }
    collection = read_settings(snakemake.input.collection)["collection"]
    previous = read_scan_cache(snakemake.params.scan_cache, settings)
    manifest = scan_image_source(
        folder,
        collection["format"],
        workers=snakemake.threads,
        previous=previous,
        image_column=collection["image_column"],
        id_column=collection["image_id_column"],
        **settings,
    )
    write_manifest(manifest, snakemake.output.manifest, IMAGE_MANIFEST_SCHEMA)
    write_rejects(rejects_of(manifest, "image_id", folder), snakemake.output.rejects)
    write_scan_cache(manifest, snakemake.params.scan_cache, settings)
    logging.info(
        "%s: %s (%s)",
        folder,
        status_counts(manifest),
        "unchanged files reused from the last scan" if previous is not None else "first scan",
    )


run_logged(main, snakemake)
