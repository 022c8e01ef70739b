"""Snakemake entry point: one shard's sentence embeddings, of its captions or of its images' OCR text."""

import json
import logging

import pandas as pd

from tuwen.files.parquet import read_table, write_features
from tuwen.logs import run_logged
from tuwen.text.sentences import load_sentence_encoder


def main(snakemake) -> None:
    with open(snakemake.input.card, encoding="utf-8") as handle:
        card = json.load(handle)
    encoder = load_sentence_encoder(card["name"], snakemake.config["weights_dir"])
    items = read_table(snakemake.input.shard_list).to_pandas()
    if snakemake.input.get("ocr"):
        # An image's text is what OCR read in it (for its current content); none read: empty.
        read = pd.read_parquet(snakemake.input.ocr, columns=["id", "digest", "text"])
        text_of = {(i, d): t for i, d, t in zip(read["id"], read["digest"], read["text"], strict=True)}
        texts = [text_of.get((i, d), "") for i, d in zip(items["id"], items["digest"], strict=True)]
    else:
        texts = items["source"].tolist()  # a caption shard's list holds the captions
    vectors = encoder.encode(texts)
    metadata = {"model_tag": encoder.tag, "encoder": card, "kind": "sentence", "logit_scale": 100.0}
    write_features(
        snakemake.output[0],
        items["id"].tolist(),
        vectors,
        items["digest"].tolist(),
        metadata,
        normalise=False,
    )
    logging.info(
        "%s: %d texts (%d empty) encoded by %s",
        snakemake.input.shard_list,
        len(texts),
        texts.count(""),
        encoder.tag,
    )


run_logged(main, snakemake)
