"""Fine-tuning CN-CLIP: CN-CLIP's own contrastive objective on image–caption pairs, resumable.

Symmetric InfoNCE over the in-batch pairs with the model's learnable logit scale
(clamped to [0, ln 100] after each step, as cn_clip does), AdamW without weight decay
on gains, biases and the logit scale, cn_clip's cosine schedule with warmup, gradient
accumulation whose negatives span the whole accumulated batch (cn_clip's `accum_freq`),
optional gradient checkpointing and locked-image tuning, AMP on CUDA.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from cn_clip.clip import image_transform, tokenize
from cn_clip.clip.model import CLIP
from cn_clip.training.scheduler import cosine_lr
from torch.utils.data import DataLoader, Dataset

from tuwen.architectures import CONTEXT_LENGTH, Architecture
from tuwen.atomic import atomic_path, write_text_atomic
from tuwen.encode import encode_images, encode_texts
from tuwen.evaluation import RECALL_KS, recall_at_k
from tuwen.images import load_image
from tuwen.models import save_checkpoint
from tuwen.splits import is_validation

LOG = logging.getLogger("tuwen.train")
LOGIT_SCALE_MAX = float(np.log(100.0))  # cn_clip clamps to ln(100) = 4.6052

# Peak learning rate at a reference global batch, scaled linearly to the batch in use.
# Released models follow Chinese-CLIP's fine-tuning recipe (5e-5 at 1024); the small
# architecture trains from scratch and needs a far larger step.
LR_RECIPES = {"tuwen-tiny": (2e-3, 64), "tuwen-tiny-rn": (2e-3, 64)}
RELEASED_RECIPE = (5e-5, 1024)


@dataclass(frozen=True)
class TrainSettings:
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


def recipe_lr(model_name: str, global_batch: int) -> float:
    """Give the default peak learning rate for `model_name` at `global_batch`."""
    reference_lr, reference_batch = LR_RECIPES.get(model_name, RELEASED_RECIPE)
    return reference_lr * global_batch / reference_batch


def training_pairs(pairs: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """Give the accepted pairs as (id, caption, path, digest), in file order."""
    accepted = pairs[pairs["status"] == "ok"]
    ok_images = images[images["status"] == "ok"].set_index("image_id")
    joined = accepted.join(ok_images[["path", "digest"]], on="image_id", how="inner")
    return pd.DataFrame(
        {
            "id": joined["text_id"].to_numpy(),
            "caption": joined["caption"].to_numpy(),
            "path": joined["path"].to_numpy(),
            "digest": joined["digest"].to_numpy(),
        }
    )


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Give the symmetric InfoNCE loss of L2-normalised paired features (row i ↔ row i)."""
    logits = logit_scale * image_features @ text_features.t()
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def pair_recall(image_embeddings: np.ndarray, text_embeddings: np.ndarray, ids: list[str]) -> dict:
    """Give R@1/5/10 and mean recall both ways when row i of each matrix is the same pair."""
    similarity = torch.from_numpy(text_embeddings) @ torch.from_numpy(image_embeddings).t()
    k = min(max(RECALL_KS), len(ids))
    positives = {item: {item} for item in ids}
    result = {}
    for task, scores in (("t2i", similarity), ("i2t", similarity.t())):
        top = torch.topk(scores, k, dim=1).indices.numpy()
        rankings = {ids[q]: [ids[t] for t in row] for q, row in enumerate(top)}
        result[task] = recall_at_k(rankings, positives, set(ids))
    result["mean_recall"] = float(np.mean([result[t][f"R@{k}"] for t in ("t2i", "i2t") for k in RECALL_KS]))
    return result


class _PairImages(Dataset):
    def __init__(self, pairs: pd.DataFrame, resolution: int):
        self.paths = pairs["path"].tolist()
        self.tokens = tokenize(pairs["caption"].tolist(), context_length=CONTEXT_LENGTH)
        self.transform = image_transform(resolution)
        self.resolution = resolution
        self.preloaded: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        if self.preloaded is not None:
            return self.preloaded[index], self.tokens[index]
        image, _ = load_image(self.paths[index])
        return self.transform(image), self.tokens[index]

    def preload(self, budget_mb: int, workers: int) -> bool:
        """Decode every image once into memory when they fit in `budget_mb`; give whether they did.

        Small sets (the demo) then train without decoding per epoch; large ones stream.
        """
        needed_mb = len(self) * 3 * self.resolution**2 * 4 / 2**20
        if needed_mb > budget_mb:
            return False
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            tensors = list(pool.map(lambda p: self.transform(load_image(p)[0]), self.paths))
        self.preloaded = torch.stack(tensors)
        return True


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


def _parameter_groups(model: CLIP, weight_decay: float) -> list[dict]:
    # cn_clip exempts norms, biases and the logit scale from decay by name ("bn", "ln", "bias");
    # its names miss the ResNet's downsample BatchNorm ("downsample.1"), so decide by shape:
    # every 0-D and 1-D tensor is a gain, bias or scale.
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0},
        {"params": [p for _, p in named if p.ndim >= 2], "weight_decay": weight_decay},
    ]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _epoch_batches(n: int, global_batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    # The order of epoch e depends only on (seed, e): a resumed run sees the same batches.
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).numpy()
    batches = [order[i : i + global_batch] for i in range(0, n, global_batch)]
    return [b for b in batches if len(b) >= 2]  # a lone pair has no negatives


class FineTuner:
    """One fine-tuning run: model, optimiser, schedule, data and resumable state."""

    def __init__(
        self,
        model: CLIP,
        arch: Architecture,
        pairs: pd.DataFrame,
        settings: TrainSettings,
        state_path: Path,
        fingerprint: str,
        locked_image_features: dict[str, np.ndarray] | None,
    ):
        self.model, self.arch, self.settings = model, arch, settings
        self.state_path = state_path
        self.device = settings.device
        validation = pairs["id"].map(lambda i: is_validation(i, settings.val_fraction))
        self.train_pairs = pairs[~validation].reset_index(drop=True)
        self.val_pairs = pairs[validation].reset_index(drop=True)
        if len(self.train_pairs) < 2 or len(self.val_pairs) < 2:
            raise ValueError(
                f"need >= 2 training and validation pairs, got {len(self.train_pairs)} and "
                f"{len(self.val_pairs)}; change train.val_fraction or add pairs"
            )
        self.locked = locked_image_features
        if settings.lock_image:
            missing = [i for i in pairs["id"] if i not in locked_image_features]
            if missing:
                raise ValueError(
                    f"locked-image tuning: no image features for {len(missing)} pairs, e.g. {missing[0]}"
                )
            for parameter in model.visual.parameters():
                parameter.requires_grad_(False)
        if settings.grad_checkpointing:
            model.set_grad_checkpointing(True)
        self.optimizer = torch.optim.AdamW(
            _parameter_groups(model, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.98), eps=1e-6
        )
        self.steps_per_epoch = len(_epoch_batches(len(self.train_pairs), settings.global_batch, 0, 0))
        self.total_steps = self.steps_per_epoch * settings.epochs
        self.schedule = cosine_lr(
            self.optimizer, settings.lr, min(settings.warmup_steps, self.total_steps), self.total_steps
        )
        self.scaler = torch.amp.GradScaler("cuda") if settings.precision == "amp" else None
        self.dataset = _PairImages(self.train_pairs, arch.resolution)
        if locked_image_features is None and self.dataset.preload(settings.preload_mb, settings.num_workers):
            LOG.info("decoded %d training images once into memory", len(self.dataset))
        self.state = TrainState(fingerprint)
        self.best_weights: dict | None = None

    # ---- state -------------------------------------------------------------------------
    def save_state(self) -> None:
        """Write the resumable state atomically (a kill mid-write leaves the previous one)."""
        payload = {
            "state": asdict(self.state),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_state(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "best": self.best_weights,
        }
        with atomic_path(self.state_path) as tmp:
            torch.save(payload, tmp)

    def try_resume(self) -> bool:
        """Load the saved state if it belongs to this very run; give whether it did."""
        if not self.state_path.exists():
            return False
        payload = torch.load(self.state_path, map_location="cpu", weights_only=False)
        if payload["state"]["fingerprint"] != self.state.fingerprint:
            LOG.info(
                "saved state at %s is of another run (config or data changed); starting afresh",
                self.state_path,
            )
            return False
        self.state = TrainState(**payload["state"])
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler and payload["scaler"]:
            self.scaler.load_state_dict(payload["scaler"])
        self.best_weights = payload["best"]
        _set_rng_state(payload["rng"])
        LOG.info(
            "resumed at step %d (epoch %d, batch %d)",
            self.state.step,
            self.state.epoch,
            self.state.batch_in_epoch,
        )
        return True

    # ---- validation --------------------------------------------------------------------
    def validate(self) -> dict:
        """Give recall of the validation pairs, both directions."""
        self.model.eval()
        items = pd.DataFrame({"id": self.val_pairs["id"], "digest": self.val_pairs["digest"]})
        if self.locked is not None:
            images = np.stack([self.locked[i] for i in self.val_pairs["id"]])
        else:
            encoded = encode_images(
                self.model,
                items.assign(source=self.val_pairs["path"]),
                self.arch.resolution,
                self.device,
                num_workers=0,
                progress=False,
            )
            images = encoded.embeddings
        texts = encode_texts(
            self.model, items.assign(source=self.val_pairs["caption"]), self.device, progress=False
        ).embeddings
        self.model.train()
        if self.locked is not None:
            self.model.visual.eval()
        normalise = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        return pair_recall(normalise(images), normalise(texts), self.val_pairs["id"].tolist())

    # ---- training ----------------------------------------------------------------------
    def _steps(self, batches: list[np.ndarray]):
        """Yield, for each global batch, its micro-batches as (images or image features, tokens)."""
        size = self.settings.batch_size
        per_step = [[b[i : i + size] for i in range(0, len(b), size)] for b in batches]
        if self.locked is not None:
            ids = self.train_pairs["id"].to_numpy()
            for chunks in per_step:
                yield [
                    (torch.from_numpy(np.stack([self.locked[i] for i in ids[c]])), self.dataset.tokens[c])
                    for c in chunks
                ]
            return
        if self.dataset.preloaded is not None:
            for chunks in per_step:
                yield [(self.dataset.preloaded[c], self.dataset.tokens[c]) for c in chunks]
            return
        # One loader per epoch: its workers decode ahead while the model computes.
        flat = [c.tolist() for chunks in per_step for c in chunks]
        loader = iter(DataLoader(self.dataset, batch_sampler=flat, num_workers=self.settings.num_workers))
        for chunks in per_step:
            yield [next(loader) for _ in chunks]

    def _features(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.locked is not None:
            image_features = images.to(self.device)
        else:
            image_features = self.model.encode_image(images.to(self.device))
        text_features = self.model.encode_text(tokens.to(self.device))
        return F.normalize(image_features.float(), dim=-1), F.normalize(text_features.float(), dim=-1)

    def _autocast(self):
        if self.settings.precision == "amp":
            return torch.autocast("cuda", dtype=torch.float16)
        if self.settings.precision == "bf16":
            return torch.autocast(self.device, dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def _step(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        scale = self.model.logit_scale.exp()
        if len(micro) == 1:
            with self._autocast():
                image_features, text_features = self._features(*micro[0])
                loss = contrastive_loss(image_features, text_features, scale)
            self._backward(loss)
            total = float(loss.detach())
        else:
            # cn_clip's accumulation: features of every micro-batch first (no grad), then each
            # micro-batch again with grad against the cached rest, so negatives span the step.
            with torch.no_grad(), self._autocast():
                cached = [self._features(*m) for m in micro]
            # The logit scale is live in every pass; letting its gradient through once makes
            # the step's gradient that of the whole batch (cn_clip counts it `accum` times).
            # With BatchNorm (ResNet towers) statistics still follow the micro-batch, as in cn_clip.
            total = 0.0
            for j, m in enumerate(micro):
                with self._autocast():
                    image_j, text_j = self._features(*m)
                    images = torch.cat(
                        [c[0] for c in cached[:j]] + [image_j] + [c[0] for c in cached[j + 1 :]]
                    )
                    texts = torch.cat([c[1] for c in cached[:j]] + [text_j] + [c[1] for c in cached[j + 1 :]])
                    scale = self.model.logit_scale.exp()
                    loss = contrastive_loss(images, texts, scale if j == 0 else scale.detach())
                self._backward(loss)
                total = float(loss.detach())
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        return total

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def run(self, on_epoch: Callable[[TrainState], None] | None = None) -> TrainState:
        """Train to the last epoch (from the saved state if there is one); give the final state."""
        settings = self.settings
        if not self.try_resume():
            torch.manual_seed(settings.seed)
            self.state.before = self.validate()
            LOG.info("before training: %s", json.dumps(self.state.before))
            self.save_state()
        self.model.train()
        if self.locked is not None:
            self.model.visual.eval()
        while self.state.epoch < settings.epochs:
            batches = _epoch_batches(
                len(self.train_pairs), settings.global_batch, settings.seed, self.state.epoch
            )
            remaining = batches[self.state.batch_in_epoch :]
            started = time.perf_counter()
            for batch, micro in zip(remaining, self._steps(remaining), strict=True):
                lr = self.schedule(self.state.step)
                loss = self._step(micro)
                now = time.perf_counter()
                seconds, started = now - started, now
                self.state.step += 1
                self.state.batch_in_epoch += 1
                self.state.log_rows.append(
                    {
                        "step": self.state.step,
                        "epoch": self.state.epoch + 1,
                        "loss": loss,
                        "lr": lr,
                        "logit_scale": float(self.model.logit_scale.detach().exp()),
                        "samples_per_s": len(batch) / seconds,
                    }
                )
                if self.state.step % settings.save_every_steps == 0:
                    self.save_state()
            metrics = self.validate()
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            self.state.epochs.append({"epoch": self.state.epoch, **metrics})
            LOG.info(
                "epoch %d/%d: loss %.4f, val mean recall %.4f",
                self.state.epoch,
                settings.epochs,
                self.state.log_rows[-1]["loss"],
                metrics["mean_recall"],
            )
            if metrics["mean_recall"] > self.state.best_mean_recall:
                self.state.best_mean_recall = metrics["mean_recall"]
                self.state.best_epoch = self.state.epoch
                self.best_weights = copy.deepcopy({k: v.cpu() for k, v in self.model.state_dict().items()})
            self.save_state()
            if on_epoch:
                on_epoch(self.state)
        return self.state

    def best_model(self) -> CLIP:
        """Give the model with the weights of the best epoch by validation mean recall."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        return self.model


def write_train_log(rows: list[dict], path: str | os.PathLike) -> None:
    """Write the per-step training log as CSV, atomically."""
    columns = ["step", "epoch", "loss", "lr", "logit_scale", "samples_per_s"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def validation_summary(state: TrainState, n_train: int, n_val: int) -> dict:
    """Give val_metrics.json: recall before training, after each epoch, and of the kept epoch."""
    best = next((e for e in state.epochs if e["epoch"] == state.best_epoch), None)
    return {
        "train_pairs": n_train,
        "validation_pairs": n_val,
        "before": state.before,
        "epochs": state.epochs,
        "best_epoch": state.best_epoch,
        "after": best,
    }


def save_fine_tuned(model: CLIP, arch: Architecture, path: str | os.PathLike, state: TrainState) -> None:
    """Save the kept model in cn_clip's checkpoint format."""
    save_checkpoint(model, path, arch, epoch=state.best_epoch, step=state.step)


def resolve_settings(config: dict, model_name: str, seed: int, device: str) -> TrainSettings:
    """Turn the config's `train` section into settings: recipe learning rate, precision, device."""
    global_batch = config["batch_size"] * config["accum_steps"]
    precision = config["precision"]
    if precision == "auto":
        precision = "amp" if device == "cuda" else "fp32"
    if precision == "amp" and device != "cuda":
        raise ValueError("train.precision amp needs a CUDA device; use fp32 (or bf16) on the CPU")
    return TrainSettings(
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


# Settings that change how fast a run goes, not what it computes.
SPEED_FIELDS = ("num_workers", "save_every_steps", "device", "preload_mb")


def run_fingerprint(settings: TrainSettings, weights_sha256: str, pairs: pd.DataFrame) -> str:
    """Give the identity of a run: a saved state is resumed only by the very same run.

    Speed settings are left out, so a killed run resumes with more workers or another device.
    """
    digest = hashlib.sha256()
    identity = {k: v for k, v in asdict(settings).items() if k not in SPEED_FIELDS}
    digest.update(json.dumps(identity, sort_keys=True).encode())
    digest.update(weights_sha256.encode())
    for row in pairs.itertuples(index=False):
        digest.update(f"{row.id}\t{row.digest}\t{row.caption}\n".encode())
    return digest.hexdigest()


def locked_features(paths: list[str], images: pd.DataFrame) -> dict[str, np.ndarray]:
    """Give the base model's image embeddings by image id, for the current image bytes only."""
    from tuwen.parquet import read_features
    from tuwen.retrieval import select_features

    accepted = images[images["status"] == "ok"]
    current = pd.DataFrame({"id": accepted["image_id"].to_numpy(), "digest": accepted["digest"].to_numpy()})
    ids, embeddings, _ = select_features(current["id"].tolist(), current, [read_features(p) for p in paths])
    return dict(zip(ids, embeddings, strict=True))
