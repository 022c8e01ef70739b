"""OCR benchmark: PP-OCR images/s and OCR-alone recall on real contest photos, rapidocr's
defaults against the workflow's settings, beside CLIP encoding of the same images.

On the real sample (the 200 text → image gallery photos and the 100 image → text query
photos), in one run on the same machine state:

- rapidocr's defaults as the workflow used them before (`PPOCR_DEFAULTS`: the shorter
  side enlarged to 736, the angle classifier on), one engine of all threads;
- the workflow's settings (`OcrOptions.defaults()`: the longer side at most 640, no classifier),
  one engine of all threads, and one single-threaded engine per thread (processes);

each gives images/s, and OCR alone as a retriever (BM25 of the captions against the text
read, as fusion's OCR channel scores): R@1/5/10 text → image and image → text against the
sample's ground truth. The processes must read exactly what one engine reads. Then each
sentence encoder of fusion's text:<encoder> channels (tuwen.text.sentences): texts/s over the
text read and the captions, and its channel alone (cosine) on the same text.

Usage: python -m bench.ocr [--threads T] [--sample DIR] [--skip-encode]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from bench.encode import DEFAULT_SAMPLE
from tuwen.clip.architectures import architecture
from tuwen.clip.encode import encode_images
from tuwen.clip.models import build_model
from tuwen.ranking.recall import read_positives, recall_at_k
from tuwen.ranking.topk import ranked_top
from tuwen.run.declaration import IMAGES, TEXTS, contest_ground_truth
from tuwen.text.lexical import BM25Index
from tuwen.text.ocr import (
    PPOCR_DEFAULTS,
    OcrOptions,
    ocr_engine,
    read_image_text,
    read_in_ocr_worker,
    start_ocr_worker,
)

CONTEST_GALLERY = 50_000


def read_all(paths: list[str], settings: OcrOptions, threads: int, processes: int) -> tuple[float, list[str]]:
    """Give images/s of OCR over `paths` and the text read in each (engines started beforehand)."""
    if processes == 1:
        engine = ocr_engine(threads, "cpu", settings)
        read_image_text(engine, paths[0], 10**9)  # warm-up: onnxruntime's first run allocates
        started = time.perf_counter()
        texts = [read_image_text(engine, path, 10**9).text for path in paths]
        return len(paths) / (time.perf_counter() - started), texts
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        processes,
        mp_context=context,
        initializer=start_ocr_worker,
        initargs=(threads, "cpu", settings, 10**9),
    ) as pool:
        list(pool.map(read_in_ocr_worker, paths[:processes]))  # every engine started and warm
        started = time.perf_counter()
        texts = [read.text for read in pool.map(read_in_ocr_worker, paths, chunksize=4)]
        return len(paths) / (time.perf_counter() - started), texts


def bm25_scores(query_texts: list[str], gallery_texts: list[str]):
    """Fusion's OCR channel: BM25 of the query texts against the gallery texts."""
    return BM25Index(gallery_texts).scores(query_texts).toarray()


def ocr_recall(sample: Path, texts: dict[str, str], scorer=bm25_scores) -> dict[str, dict]:
    """Give OCR-alone R@1/5/10 both ways on the sample, from the text read in each image (by file
    name), each query's texts scored against the gallery's by `scorer` (BM25, or cosines)."""
    truth = str(sample / "ground_truth.csv")
    t2i_queries = pd.read_csv(sample / "附件2" / "word_test.csv", dtype=str)
    i2t_gallery = pd.read_csv(sample / "附件3" / "word_data.csv", dtype=str)
    t2i_gallery = sorted(p.name for p in (sample / "附件2" / "ImageData").iterdir())
    i2t_queries = pd.read_csv(sample / "附件3" / "image_test.csv", dtype=str)["image_id"].tolist()
    result = {}
    for task, queries, query_texts, gallery, gallery_texts in (
        (
            "t2i",
            t2i_queries["text_id"].tolist(),
            t2i_queries["caption"].tolist(),
            t2i_gallery,
            [texts.get(g, "") for g in t2i_gallery],
        ),
        (
            "i2t",
            i2t_queries,
            [texts.get(q, "") for q in i2t_queries],
            i2t_gallery["text_id"].tolist(),
            i2t_gallery["caption"].tolist(),
        ),
    ):
        order = sorted(range(len(gallery)), key=lambda i: gallery[i])
        ids = [gallery[i] for i in order]
        scores = scorer(query_texts, [gallery_texts[i] for i in order])
        rows, cols, _, _ = ranked_top(scores, 10)
        rankings = {q: [] for q in queries}
        for row, col in zip(rows, cols, strict=True):
            rankings[queries[row]].append(ids[col])
        kind = TEXTS if task == "t2i" else IMAGES
        result[task] = recall_at_k(rankings, read_positives(contest_ground_truth(truth, kind)), set(ids))
    return result


def sentence_rows(sample: Path, texts: dict[str, str], ocr_rate: float) -> None:
    """Print each sentence encoder's texts/s (the OCR texts and the captions of the sample) and its
    channel alone (cosine of the caption and the image's text) beside BM25 on the same text."""
    from tuwen.text.sentences import ENCODERS, EncoderMissing, load_sentence_encoder

    captions = pd.concat(
        [
            pd.read_csv(sample / "附件2" / "word_test.csv", dtype=str)["caption"],
            pd.read_csv(sample / "附件3" / "word_data.csv", dtype=str)["caption"],
        ]
    ).tolist()
    everything = [*texts.values(), *captions]
    recall_columns = " | ".join(f"{t} R@{k}" for t in ("t2i", "i2t") for k in (1, 5, 10))
    print(f"\n| text channel on the text read (workflow OCR) | texts/s | × OCR images/s | {recall_columns} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    bm25 = ocr_recall(sample, texts)
    cells = " | ".join(f"{bm25[t][f'R@{k}']:.2f}" for t in ("t2i", "i2t") for k in (1, 5, 10))
    print(f"| ocr (BM25 of characters) | — | — | {cells} |")
    for name in ENCODERS:
        try:
            encoder = load_sentence_encoder(name)
        except EncoderMissing as missing:
            print(f"| text:{name} | not run: {missing} | | | | | | | |")
            continue
        encoder.encode(everything[:8])  # warm-up: the first call loads the weights
        started = time.perf_counter()
        encoder.encode(everything)
        rate = len(everything) / (time.perf_counter() - started)

        def cosines(query_texts, gallery_texts, encoder=encoder):
            return (
                encoder.encode(query_texts).astype("float64")
                @ encoder.encode(gallery_texts).astype("float64").T
            )

        recall = ocr_recall(sample, texts, cosines)
        cells = " | ".join(f"{recall[t][f'R@{k}']:.2f}" for t in ("t2i", "i2t") for k in (1, 5, 10))
        print(f"| text:{name} | {rate:.1f} | {rate / ocr_rate:.1f} | {cells} |")


def encode_rate(paths: list[str], arch_name: str, threads: int) -> float:
    """Give images/s of end-to-end CLIP encoding (read, decode, preprocess, encode) of `paths`."""
    import torch

    torch.set_num_threads(threads)
    arch = architecture(arch_name)
    model = build_model(arch, 0).eval()
    items = pd.DataFrame({"id": [str(i) for i in range(len(paths))], "digest": None, "source": paths})
    encode_images(model, items.head(8), arch.resolution, "cpu", 64, threads, None, progress=False)
    started = time.perf_counter()
    encode_images(model, items, arch.resolution, "cpu", 64, threads, None, progress=False)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--skip-encode", action="store_true", help="leave out the CLIP encoding rows")
    args = parser.parse_args()
    if not (args.sample / "ground_truth.csv").exists():
        raise SystemExit(f"the real sample is needed for OCR recall: {args.sample} has no ground_truth.csv")
    images = sorted((args.sample / "附件2" / "ImageData").iterdir()) + sorted(
        (args.sample / "附件3" / "ImageData").iterdir()
    )
    paths = [str(p) for p in images]
    names = [p.name for p in images]
    variants = [
        (
            "rapidocr defaults (shorter side up to 736, classifier on), 1 engine",
            PPOCR_DEFAULTS,
            args.threads,
            1,
        ),
        (
            "workflow (longer side at most 640, no classifier), 1 engine",
            OcrOptions.defaults(),
            args.threads,
            1,
        ),
        (f"workflow, {args.threads} single-threaded engines", OcrOptions.defaults(), 1, args.threads),
    ]
    rows, read = [], {}
    for label, settings, threads, processes in variants:
        rate, texts = read_all(paths, settings, threads, processes)
        read[label] = texts
        rows.append((label, rate, ocr_recall(args.sample, dict(zip(names, texts, strict=True)))))
    same = read[variants[1][0]] == read[variants[2][0]]
    base = rows[0][1]
    print(
        f"{len(paths)} photos of the real sample (附件2 gallery + 附件3 queries), {args.threads} threads; "
        f"OCR alone = BM25 of captions against the text read\n"
    )
    recall_columns = " | ".join(f"{t} R@{k}" for t in ("t2i", "i2t") for k in (1, 5, 10))
    print(f"| OCR | images/s | × defaults | 50,000 images | {recall_columns} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, rate, recall in rows:
        cells = " | ".join(f"{recall[t][f'R@{k}']:.2f}" for t in ("t2i", "i2t") for k in (1, 5, 10))
        print(
            f"| {label} | {rate:.2f} | {rate / base:.2f} | {CONTEST_GALLERY / rate / 3600:.1f} h | {cells} |"
        )
    print(f"\nThe engines in processes read exactly what one engine reads: **{'yes' if same else 'NO'}**")
    sentence_rows(args.sample, dict(zip(names, read[variants[1][0]], strict=True)), rows[1][1])
    if not args.skip_encode:
        print("\n| CLIP encode (end to end, same photos) | images/s | × OCR (workflow, best) |")
        print("| --- | ---: | ---: |")
        best = max(rate for _, rate, _ in rows[1:])
        for name in ("tuwen-tiny-rn", "ViT-B-16"):
            rate = encode_rate(paths, name, args.threads)
            print(f"| {name} | {rate:.2f} | {rate / best:.2f} |")


if __name__ == "__main__":
    main()
