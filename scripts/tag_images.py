"""Snakemake entry point: an image collection's zero-shot tags from the run's labels file."""

import logging

import torch

from tuwen.clip.cards import ModelCard
from tuwen.clip.encode import encode_texts, load_encoder
from tuwen.files.atomic import atomic_path
from tuwen.logs import run_logged
from tuwen.ranking.channels import embeddings_by_id
from tuwen.ranking.tags import label_embeddings, prompt_templates, read_labels, tag_table
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    torch.set_num_threads(snakemake.threads)
    settings = read_settings(snakemake.input.settings)["tags"]
    labels = read_labels(snakemake.input.labels)
    templates = prompt_templates(settings["templates"])
    card = ModelCard.read(snakemake.input.card)
    # The prompts are encoded as the photos were: by the backend an encode job chooses.
    model, device, why = load_encoder(
        card, snakemake.config["encode"]["device"], snakemake.input.towers,
        snakemake.config["encode"]["backend"], snakemake.threads,
    )  # fmt: skip
    logging.info("%d labels x %d prompts, encoded on %s (%s)", len(labels), len(templates), device, why)

    def encode(prompts):
        import pandas as pd

        items = pd.DataFrame({"id": range(len(prompts)), "digest": None, "source": prompts})
        return encode_texts(model, items, device, progress=False).embeddings

    classifier = label_embeddings(encode, labels, templates)
    by_id, scale = embeddings_by_id(list(snakemake.input.features), snakemake.input.assignment)
    ids = sorted(by_id)
    embeddings = [by_id[i] for i in ids]
    table = tag_table(ids, embeddings, classifier, labels, scale, settings["top"])
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    best = table[table["rank"] == 1]["label"].value_counts().head(5).to_dict()
    logging.info("tagged %d photos; most common first labels: %s", len(ids), best)


run_logged(main, snakemake)
