"""Fine-tuning settings: the config's train section resolved, and the identity of a run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import pandas as pd

# Peak learning rate at a reference global batch, scaled linearly to the batch in use.
# Released models follow Chinese-CLIP's fine-tuning recipe (5e-5 at 1024); the small
# architecture trains from scratch and needs a far larger step.
LR_RECIPES = {"tuwen-tiny": (2e-3, 64), "tuwen-tiny-rn": (2e-3, 64)}
RELEASED_RECIPE = (5e-5, 1024)


@dataclass(frozen=True)
class TrainOptions:
    """Hyper-parameters of one fine-tuning run (config `train`, resolved)."""

    epochs: int
    batch_size: int
    accum_steps: int
    lr: float
    weight_decay: float
    warmup_steps: int
    val_fraction: float
    lock_image: bool
    grad_checkpointing: bool
    precision: str
    seed: int
    # Speed only: a resumed run may change them (see SPEED_FIELDS).
    num_workers: int
    save_every_steps: int
    device: str
    preload_mb: int

    @property
    def global_batch(self) -> int:
        """Give the pairs per optimiser step."""
        return self.batch_size * self.accum_steps


# Settings that change how fast a run goes, not what it computes.
SPEED_FIELDS = ("num_workers", "save_every_steps", "device", "preload_mb")


def recipe_lr(model_name: str, global_batch: int) -> float:
    """Give the default peak learning rate for `model_name` at `global_batch`."""
    reference_lr, reference_batch = LR_RECIPES.get(model_name, RELEASED_RECIPE)
    return reference_lr * global_batch / reference_batch


def resolve_settings(config: dict, model_name: str, seed: int, device: str) -> TrainOptions:
    """Turn the config's `train` section into settings: recipe learning rate, precision, device."""
    global_batch = config["batch_size"] * config["accum_steps"]
    precision = config["precision"]
    if precision == "auto":
        precision = "amp" if device == "cuda" else "fp32"
    if precision == "amp" and device != "cuda":
        raise ValueError("train.precision amp needs a CUDA device; use fp32 (or bf16) on the CPU")
    return TrainOptions(
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        accum_steps=config["accum_steps"],
        lr=config["lr"] or recipe_lr(model_name, global_batch),
        weight_decay=config["weight_decay"],
        warmup_steps=config["warmup_steps"],
        val_fraction=config["val_fraction"],
        lock_image=config["lock_image"],
        grad_checkpointing=config["grad_checkpointing"],
        precision=precision,
        seed=seed,
        num_workers=config["num_workers"],
        save_every_steps=config["save_every_steps"],
        device=device,
        preload_mb=config["preload_mb"],
    )


def run_fingerprint(
    settings: TrainOptions, weights_sha256: str, pairs: pd.DataFrame, val_pairs: pd.DataFrame | None = None
) -> str:
    """Give the identity of a run: a saved state is resumed only by the very same run.

    Speed settings are left out, so a killed run resumes with more workers or another device.
    Validation pairs declared apart are part of it (held-out ones are already in `pairs`).
    """
    digest = hashlib.sha256()
    identity = {k: v for k, v in asdict(settings).items() if k not in SPEED_FIELDS}
    digest.update(json.dumps(identity, sort_keys=True).encode())
    digest.update(weights_sha256.encode())
    parts = [pairs] if val_pairs is None else [pairs, val_pairs]
    for number, part in enumerate(parts):
        if number:
            digest.update(b"validation\n")
        for row in part.itertuples(index=False):
            digest.update(f"{row.id}\t{row.digest}\t{row.caption}\n".encode())
    return digest.hexdigest()
