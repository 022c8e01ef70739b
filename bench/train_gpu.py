"""Benchmark: fine-tuning throughput and peak GPU memory, with and without gradient checkpointing.

For a session lent a GPU (issue 3): ViT-B-16, random init, batch 128, fp16 AMP, run side by side
in one process. Prints samples/s and peak memory per setting and their ratios. On a machine
without CUDA it runs the same code path in fp32 on the CPU (use a small model and batch there).
Usage: python -m bench.train_gpu [model] [batch] [steps]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from cn_clip.clip import tokenize

from tuwen.clip.architectures import architecture
from tuwen.clip.models import build_model
from tuwen.train import contrastive_loss


def measure(model_name: str, batch: int, steps: int, checkpointing: bool, device: str) -> tuple[float, float]:
    """Give (training samples/s, peak memory in GiB) over `steps` steps after one warm-up step."""
    arch = architecture(model_name)
    model = build_model(arch, 0).to(device).train()
    model.set_grad_checkpointing(checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" else None
    images = torch.randn(batch, 3, arch.resolution, arch.resolution, device=device)
    tokens = tokenize(["一只猫坐在窗台上看着外面的雨"] * batch).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 1):
        if step == 1:
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.float16, enabled=device == "cuda"):
            image_features = F.normalize(model.encode_image(images).float(), dim=-1)
            text_features = F.normalize(model.encode_text(tokens).float(), dim=-1)
            loss = contrastive_loss(image_features, text_features, model.logit_scale.exp())
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return batch * steps / seconds, peak


def main(model_name: str = "ViT-B-16", batch: int = 128, steps: int = 20) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    results = {}
    for checkpointing in (False, True):
        results[checkpointing] = measure(model_name, batch, steps, checkpointing, device)
        rate, peak = results[checkpointing]
        print(
            f"{name} {model_name} batch {batch} grad_checkpointing={checkpointing!s:5}: "
            f"{rate:8.1f} samples/s, peak {peak:.2f} GiB"
        )
    print(
        f"ratio with/without checkpointing: samples/s {results[True][0] / results[False][0]:.2f}, "
        f"peak memory {results[True][1] / results[False][1]:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16", help="cn_clip architecture (ViT-B-16)")
    parser.add_argument("--batch", type=int, default=128, help="pairs per step (128)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (20)")
    args = parser.parse_args()
    main(args.model, args.batch, args.steps)
