"""A fine-tuning run's resumable state: where it is, what it has measured, and the RNGs."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tuwen.files.atomic import atomic_path


@dataclass
class TrainState:
    """Everything needed to continue a run exactly where it stopped."""

    fingerprint: str
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    before: dict = field(default_factory=dict)
    epochs: list = field(default_factory=list)
    log_rows: list = field(default_factory=list)
    best_epoch: int = 0
    best_mean_recall: float = -1.0


def rng_state() -> dict:
    """Give the state of every random number generator training draws from."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore `rng_state()`; CUDA states for as many GPUs as are visible now (a run saved
    with several GPUs may resume with fewer, e.g. under a scheduler that grants one)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


class StateFile:
    """The file a run saves its state to, and reads it back from when it is the same run."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def save(self, state: TrainState, parts: dict) -> None:
        """Write the state and the run's parts (model, optimiser, ...) atomically: a kill
        mid-write leaves the previous file."""
        with atomic_path(self.path) as tmp:
            torch.save({"state": asdict(state), "rng": rng_state(), **parts}, tmp)

    def load(self, fingerprint: str) -> tuple[TrainState, dict] | None:
        """Give the saved state and parts if they belong to the run `fingerprint`, else None."""
        if not self.path.exists():
            return None
        payload = torch.load(self.path, map_location="cpu", weights_only=False)
        if payload["state"]["fingerprint"] != fingerprint:
            return None
        return TrainState(**payload.pop("state")), payload
