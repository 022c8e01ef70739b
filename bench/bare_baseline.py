"""The bare baseline of the scale benchmark: both directions in one plain process.

Reads the CSVs, decodes and encodes every image and caption with the same model and
preprocessing as the workflow (its library functions, DataLoader workers = cores), one
exact search per direction, and writes result1.csv and result2.csv. No manifests, no
shards, no caching, no job start-ups: what the workflow is measured against.

Usage: python -m bench.bare_baseline DATA_ROOT OUT_DIR [--model tuwen-tiny-rn] [--seed 0]
    [--batch-size 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import torch

from tuwen.clip.architectures import architecture
from tuwen.clip.encode import encode_images, encode_texts
from tuwen.clip.models import build_model
from tuwen.files.parquet import FeatureShard, l2_normalised
from tuwen.logs import PEAK_RSS_LINE, peak_rss_mb
from tuwen.ranking.exact import merge_topk, shard_topk
from tuwen.report.tables import result_table, write_result_table
from tuwen.run import contest


def _image_items(folder: Path) -> pd.DataFrame:
    names = sorted(os.listdir(folder))
    return pd.DataFrame({"id": names, "digest": None, "source": [str(folder / n) for n in names]})


def _caption_items(csv_path: Path) -> pd.DataFrame:
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return pd.DataFrame({"id": table["text_id"], "digest": None, "source": table["caption"]})


def _topk(queries: FeatureShard, gallery: FeatureShard, k: int) -> pd.DataFrame:
    scale = queries.metadata["logit_scale"]
    partial = shard_topk(queries.embeddings, gallery.embeddings, gallery.ids, k, scale)
    return merge_topk([partial], queries.ids, k, scale)


def _normalised(ids: list[str], embeddings, scale: float) -> FeatureShard:
    return FeatureShard(ids, l2_normalised(embeddings), [""] * len(ids), {"logit_scale": scale})


def run(data_root: Path, out_dir: Path, model: str, seed: int, batch_size: int, threads: int) -> None:
    """Write result1.csv and result2.csv for the contest folder `data_root` into `out_dir`."""
    torch.set_num_threads(threads)
    arch = architecture(model)
    net = build_model(arch, seed).float().eval()
    scale = float(net.logit_scale.exp().item())

    def images(folder: Path, order: list[str] | None = None) -> FeatureShard:
        encoded = encode_images(
            net, _image_items(folder), arch.resolution, "cpu", batch_size, threads, None, progress=False
        )
        shard = _normalised(encoded.ids, encoded.embeddings, scale)
        if order is None:
            return shard
        row = {item_id: i for i, item_id in enumerate(shard.ids)}
        keep = [item_id for item_id in order if item_id in row]
        return FeatureShard(keep, shard.embeddings[[row[i] for i in keep]], [""] * len(keep), shard.metadata)

    def texts(csv_path: Path) -> FeatureShard:
        items = _caption_items(csv_path)
        encoded = encode_texts(net, items, "cpu", batch_size, progress=False)
        return _normalised(encoded.ids, encoded.embeddings, scale)

    query_order = pd.read_csv(data_root / "附件3/image_test.csv", dtype=str)["image_id"].tolist()
    t2i = _topk(texts(data_root / "附件2/word_test.csv"), images(data_root / "附件2/ImageData"), 10)
    i2t = _topk(
        images(data_root / "附件3/ImageData", query_order), texts(data_root / "附件3/word_data.csv"), 10
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for task, topk in (("t2i", t2i), ("i2t", i2t)):
        spec = contest.TASKS[task]
        write_result_table(result_table(topk, spec["columns"]), out_dir / spec["table"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--model", default="tuwen-tiny-rn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    run(args.data_root, args.out_dir, args.model, args.seed, args.batch_size, args.threads)
    print(PEAK_RSS_LINE % peak_rss_mb())


if __name__ == "__main__":
    main()
