"""Benchmark: fine-tuning with locked-image tuning vs full tuning, side by side in one process.

Both runs train the same model on the same demo pairs for the same epochs; the locked run
reads image embeddings from the base model (as the workflow reads them from feature
shards) instead of decoding and encoding images every step. Prints wall time, training
samples/s and the ratio. Usage: python -m bench.train_lock_image [epochs] [model]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from tuwen.clip.architectures import architecture
from tuwen.clip.encode import encode_images
from tuwen.clip.models import build_model
from tuwen.data.demo import generate_demo
from tuwen.data.ingest import read_text_set, scan_image_folder
from tuwen.run.schema import schema_default
from tuwen.train import FineTuner, TrainOptions, training_pairs


def main(epochs: int = 3, model_name: str = "tuwen-tiny-rn") -> None:
    torch.set_num_threads(2)
    arch = architecture(model_name)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        generate_demo(root, train_pairs=1500, queries=100, seed=0)
        images = scan_image_folder(
            root / "附件1/ImageData", schema_default("ingest.max_image_pixels"), workers=2
        )
        pairs = training_pairs(
            read_text_set(root / "附件1/ImageWordData.csv", "image_id", "caption", images), images
        )
        base = build_model(arch, 0).eval()
        started = time.perf_counter()
        encoded = encode_images(
            base,
            pairs.rename(columns={"path": "source"}),
            arch.resolution,
            "cpu",
            64,
            2,
            None,
            progress=False,
        )
        encode_seconds = time.perf_counter() - started
        features = dict(zip(encoded.ids, encoded.embeddings, strict=True))
        results = {}
        for lock in (False, True):
            settings = TrainOptions(
                epochs=epochs,
                batch_size=64,
                accum_steps=1,
                lr=2e-3,
                weight_decay=0.001,
                warmup_steps=20,
                val_fraction=0.2,
                lock_image=lock,
                grad_checkpointing=False,
                precision="fp32",
                seed=0,
                num_workers=2,
                save_every_steps=10**6,
                device="cpu",
                preload_mb=0,
            )
            tuner = FineTuner(
                build_model(arch, 0),
                arch,
                pairs,
                settings,
                Path(tmp) / f"state-{lock}.pt",
                "bench",
                features if lock else None,
            )
            started = time.perf_counter()
            state = tuner.run()
            seconds = time.perf_counter() - started
            rate = sum(r["samples_per_s"] for r in state.log_rows) / len(state.log_rows)
            results[lock] = (seconds, rate, state.epochs[-1]["mean_recall"])
            print(
                f"lock_image={lock!s:5}  {seconds:7.1f} s for {epochs} epochs (validation included), "
                f"{rate:7.1f} training pairs/s, val mean recall {results[lock][2]:.3f}"
            )
        print(f"one-off base encoding of {len(pairs)} training images (locked run): {encode_seconds:.1f} s")
        print(
            f"ratio locked/full: wall {results[True][0] / results[False][0]:.2f}, "
            f"pairs/s {results[True][1] / results[False][1]:.2f}"
        )


if __name__ == "__main__":
    main(*(int(a) if a.isdigit() else a for a in sys.argv[1:]))
