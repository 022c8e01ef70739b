"""Snakemake entry point: fine-tune CN-CLIP on the training pairs, resuming a killed run."""

import json
import logging
from pathlib import Path

import pandas as pd
import torch

from tuwen.clip.cards import ModelCard
from tuwen.clip.encode import pick_device
from tuwen.clip.models import load_model
from tuwen.files.atomic import atomic_path, write_text_atomic
from tuwen.logs import run_logged
from tuwen.report.figures import save_figure, training_curves_figure
from tuwen.run.settings import read_settings
from tuwen.train import (
    FineTuner,
    locked_features,
    resolve_settings,
    run_fingerprint,
    save_fine_tuned,
    training_pairs,
    validation_rows,
    validation_summary,
    write_train_log,
)


def main(snakemake) -> None:
    torch.set_num_threads(snakemake.threads)
    card = ModelCard.read(snakemake.input.card)
    images = pd.read_parquet(snakemake.input.images)
    pairs = training_pairs(pd.read_parquet(snakemake.input.pairs), images)
    # Speed-only settings (device, workers, saves, preloading) come from the config, so that
    # changing them does not retrain; every result setting comes from the settings file.
    results = read_settings(snakemake.input.settings)
    train_config = {**snakemake.config["train"], **results["train"]}
    device = pick_device(train_config["device"])
    settings = resolve_settings(train_config, card.name, results["seed"], device)
    logging.info("settings: %s", settings)
    # Validation pairs declared apart (CN-CLIP's valid split), or none: a share held out.
    val_pairs, val_images = None, None
    if hasattr(snakemake.input, "validation_pairs"):
        val_images = pd.read_parquet(snakemake.input.validation_images)
        val_pairs = training_pairs(pd.read_parquet(snakemake.input.validation_pairs), val_images)
    locked, locked_val = None, None
    if settings.lock_image:
        locked = locked_features(list(snakemake.input.locked_features), images)
        if val_images is not None:
            locked_val = locked_features(list(snakemake.input.locked_validation_features), val_images)
    model = load_model(card.arch, card.checkpoint, device)
    state_path = Path(snakemake.params.state)
    tuner = FineTuner(
        model,
        card.arch,
        pairs,
        settings,
        state_path,
        run_fingerprint(settings, card.weights_sha256, pairs, val_pairs),
        locked,
        val_pairs,
        locked_val,
    )
    state = tuner.run()

    save_fine_tuned(tuner.best_model(), card.arch, snakemake.output.checkpoint, state)
    write_train_log(state.log_rows, snakemake.output.log_table)
    validated_on = "held out" if val_pairs is None else "declared"
    summary = validation_summary(state, len(tuner.train_pairs), len(tuner.val_pairs), validated_on)
    write_text_atomic(snakemake.output.metrics, json.dumps(summary, indent=2) + "\n")
    with atomic_path(snakemake.output.metrics_table) as tmp:
        pd.DataFrame(validation_rows(summary)).to_csv(
            tmp, index=False, float_format="%.4f", lineterminator="\n"
        )
    save_figure(training_curves_figure(state.log_rows, summary), snakemake.output.curves)
    # Finished: a later run of this rule (forced, or with new inputs) trains afresh.
    state_path.unlink(missing_ok=True)
    logging.info("kept %s: %s", summary["kept"], json.dumps(summary["after"]))


run_logged(main, snakemake)
