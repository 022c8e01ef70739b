"""Fine-tuning CN-CLIP: CN-CLIP's own contrastive objective on image–caption pairs, resumable.

Symmetric InfoNCE over the in-batch pairs with the model's learnable logit scale
(clamped to [0, ln 100] after each step, as cn_clip does), AdamW without weight decay
on gains, biases and the logit scale, cn_clip's cosine schedule with warmup, gradient
accumulation whose negatives span the whole accumulated batch (cn_clip's `accum_freq`),
optional gradient checkpointing and locked-image tuning, AMP on CUDA.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from cn_clip.clip.model import CLIP
from cn_clip.training.scheduler import cosine_lr

from tuwen.clip.architectures import Architecture
from tuwen.clip.encode import encode_texts
from tuwen.errors import TuwenError
from tuwen.ranking.recall import paired_recall
from tuwen.train.data import LockedImages, PixelImages, split_pairs
from tuwen.train.options import TrainOptions
from tuwen.train.state import StateFile, TrainState, set_rng_state

LOG = logging.getLogger("tuwen.train")
LOGIT_SCALE_MAX = float(np.log(100.0))  # cn_clip clamps to ln(100) = 4.6052


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Give the symmetric InfoNCE loss of L2-normalised paired features (row i ↔ row i)."""
    logits = logit_scale * image_features @ text_features.t()
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def pair_recall(image_embeddings: np.ndarray, text_embeddings: np.ndarray, pairs: pd.DataFrame) -> dict:
    """Give R@1/5/10 and mean recall both ways of the pairs (`id`, `image_id`): row i of the
    texts is pair i, the images are the pairs' distinct images in first-seen order."""
    similarity = (torch.from_numpy(text_embeddings) @ torch.from_numpy(image_embeddings).t()).numpy()
    images = list(dict.fromkeys(pairs["image_id"]))
    return paired_recall(similarity, pairs["id"].tolist(), pairs["image_id"].tolist(), images)


def _parameter_groups(model: CLIP, weight_decay: float) -> list[dict]:
    # cn_clip exempts norms, biases and the logit scale from decay by name ("bn", "ln", "bias");
    # its names miss the ResNet's downsample BatchNorm ("downsample.1"), so decide by shape:
    # every 0-D and 1-D tensor is a gain, bias or scale.
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0},
        {"params": [p for _, p in named if p.ndim >= 2], "weight_decay": weight_decay},
    ]


def _epoch_batches(n: int, global_batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    # The order of epoch e depends only on (seed, e): a resumed run sees the same batches.
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).numpy()
    batches = [order[i : i + global_batch] for i in range(0, n, global_batch)]
    return [b for b in batches if len(b) >= 2]  # a lone pair has no negatives


class FineTuner:
    """One fine-tuning run: the model, its optimiser and schedule, the step and the loop.

    Its parts come from their own modules: the settings (tuwen.train.options), where
    images come from (tuwen.train.data: pixels, or the base model's locked features),
    and the resumable state (tuwen.train.state).
    """

    def __init__(
        self,
        model: CLIP,
        arch: Architecture,
        pairs: pd.DataFrame,
        settings: TrainOptions,
        state_path: Path,
        fingerprint: str,
        locked_image_features: dict[str, np.ndarray] | None,
        val_pairs: pd.DataFrame | None = None,
        locked_val_features: dict[str, np.ndarray] | None = None,
    ):
        """`val_pairs`: validation pairs declared apart (CN-CLIP's valid split), every one of
        `pairs` then trains; none = the held-out share `settings.val_fraction` of `pairs`."""
        self.model, self.arch, self.settings = model, arch, settings
        self.device = settings.device
        if val_pairs is None:
            self.train_pairs, self.val_pairs = split_pairs(pairs, settings.val_fraction)
        else:
            if len(pairs) < 2 or len(val_pairs) < 2:
                raise ValueError(
                    f"need >= 2 training and validation pairs, got {len(pairs)} and {len(val_pairs)}"
                )
            self.train_pairs, self.val_pairs = pairs.reset_index(drop=True), val_pairs.reset_index(drop=True)
        self.images: LockedImages | PixelImages
        if settings.lock_image:
            features = locked_image_features or {}
            self.images = LockedImages(
                self.train_pairs,
                features,
                self.val_pairs,
                features if val_pairs is None else (locked_val_features or {}),
            )
        else:
            pixels = PixelImages(self.train_pairs, arch.resolution, settings.num_workers, settings.preload_mb)
            if pixels.preloaded:
                LOG.info("decoded %d training images once into memory", len(self.train_pairs))
            self.images = pixels
        self.images.prepare(model)
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
        self.state_file = StateFile(state_path)
        self.state = TrainState(fingerprint)
        self.best_weights: dict | None = None

    # ---- state -------------------------------------------------------------------------
    def save_state(self) -> None:
        """Write the resumable state (a kill mid-write leaves the previous one)."""
        self.state_file.save(
            self.state,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "best": self.best_weights,
            },
        )

    def try_resume(self) -> bool:
        """Load the saved state if it belongs to this very run; give whether it did."""
        saved = self.state_file.load(self.state.fingerprint)
        if saved is None:
            if self.state_file.path.exists():
                LOG.info(
                    "saved state at %s is of another run (config or data changed); starting afresh",
                    self.state_file.path,
                )
            return False
        self.state, parts = saved
        self.model.load_state_dict(parts["model"])
        self.optimizer.load_state_dict(parts["optimizer"])
        if self.scaler and parts["scaler"]:
            self.scaler.load_state_dict(parts["scaler"])
        self.best_weights = parts["best"]
        set_rng_state(parts["rng"])
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
        images = self.images.validation_embeddings(
            self.model, self.val_pairs.drop_duplicates("image_id"), self.arch.resolution, self.device
        )
        items = pd.DataFrame(
            {
                "id": self.val_pairs["id"],
                "digest": self.val_pairs["digest"],
                "source": self.val_pairs["caption"],
            }
        )
        texts = encode_texts(self.model, items, self.device, progress=False).embeddings
        self.images.train_mode(self.model)
        normalise = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        return pair_recall(normalise(images), normalise(texts), self.val_pairs)

    # ---- training ----------------------------------------------------------------------
    def _steps(self, batches: list[np.ndarray]):
        """Yield, for each global batch, its micro-batches as (images or image features, tokens)."""
        return self.images.micro_batches(batches, self.settings.batch_size)

    def _features(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_features = self.images.image_features(self.model, images, self.device)
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

    def _guarded_step(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Take a step; running out of GPU memory ends the run with the settings to lower."""
        try:
            return self._step(micro)
        except torch.OutOfMemoryError:
            settings = self.settings
            raise TuwenError(
                f"out of GPU memory at train.batch_size {settings.batch_size}: lower it (and raise "
                f"train.accum_steps, now {settings.accum_steps}, to keep the global batch of "
                f"{settings.global_batch}), or set train.grad_checkpointing: true"
            ) from None

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def run(self, on_epoch: Callable[[TrainState], None] | None = None) -> TrainState:
        """Train to the last epoch (from the saved state if there is one); give the final state."""
        settings = self.settings
        if not self.try_resume():
            torch.manual_seed(settings.seed)
            self.state.before = self.validate()
            LOG.info("before training: %s", json.dumps(self.state.before))
            # The model before training is a candidate like any epoch: a fine-tuning that
            # only hurts (too high a learning rate, too few pairs) keeps the zero-shot weights.
            self._keep_if_best(0, self.state.before)
            self.save_state()
        self.images.train_mode(self.model)
        while self.state.epoch < settings.epochs:
            batches = _epoch_batches(
                len(self.train_pairs), settings.global_batch, settings.seed, self.state.epoch
            )
            remaining = batches[self.state.batch_in_epoch :]
            started = time.perf_counter()
            for batch, micro in zip(remaining, self._steps(remaining), strict=True):
                lr = self.schedule(self.state.step)
                loss = self._guarded_step(micro)
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
            self._keep_if_best(self.state.epoch, metrics)
            self.save_state()
            if on_epoch:
                on_epoch(self.state)
        if torch.cuda.is_available() and settings.device == "cuda":
            LOG.info("peak GPU memory: %.2f GiB", torch.cuda.max_memory_allocated() / 2**30)
        return self.state

    def _keep_if_best(self, epoch: int, metrics: dict) -> None:
        # Strictly better only: a tie keeps the earlier weights (the zero-shot model first).
        if metrics["mean_recall"] > self.state.best_mean_recall:
            self.state.best_mean_recall = metrics["mean_recall"]
            self.state.best_epoch = epoch
            self.best_weights = copy.deepcopy({k: v.cpu() for k, v in self.model.state_dict().items()})

    def best_model(self) -> CLIP:
        """Give the model with the best weights by validation mean recall: the model before
        training (epoch 0) or one of its epochs."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        return self.model
