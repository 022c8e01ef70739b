"""Snakemake entry point: zero-shot beside fine-tuned, per model and direction, on validation
and test (results/eval/results.md and .csv)."""

import json
import logging
from pathlib import Path

import pandas as pd

from tuwen.files.atomic import atomic_path, write_text_atomic
from tuwen.files.parquet import FeatureShard, read_features
from tuwen.logs import run_logged
from tuwen.ranking.exact import search_gallery, select_features
from tuwen.ranking.recall import RECALL_KS, rankings_of, read_positives, recall_at_k
from tuwen.report.results_table import results_markdown, results_rows
from tuwen.run.declaration import GroundTruth
from tuwen.run.settings import read_settings


def stage_recall(
    wanted: list[str],
    queries: pd.DataFrame,
    gallery: pd.DataFrame,
    files: dict,
    positives: dict,
    threads: int,
) -> dict:
    """Recall of one model stage on one task: its features of the queries `wanted` (current in
    the assignment `queries`) searched over its features of the gallery (current in `gallery`)."""
    shards = [read_features(path) for path in files["queries"]]
    ids, embeddings, _ = select_features(wanted, queries, shards)
    digest_of = dict(zip(queries["id"], queries["digest"], strict=True))
    chosen = FeatureShard(ids, embeddings, [digest_of[i] for i in ids], shards[0].metadata)
    topk = search_gallery(chosen, files["gallery"], gallery, max(RECALL_KS), threads=threads)
    return recall_at_k(rankings_of(topk), positives, set(gallery["id"]))


def main(snakemake) -> None:
    plan = snakemake.params.plan
    truths = read_settings(snakemake.input.ground_truth)["ground_truth"]
    test = {}
    for task, spec in plan["tasks"].items():
        positives = read_positives(GroundTruth(**truths[task]))
        wanted = read_features(spec["query_order"]).ids
        queries = pd.read_parquet(spec["query_assignment"], columns=["id", "digest"])
        gallery = pd.read_parquet(spec["gallery_assignment"], columns=["id", "digest"])
        for model, stages in spec["stages"].items():
            for stage, files in stages.items():
                recall = stage_recall(wanted, queries, gallery, files, positives, snakemake.threads)
                test[(model, stage, task)] = recall
                logging.info("%s %s on %s: %s", model, stage, task, test[(model, stage, task)])
    validation = {m: json.loads(Path(p).read_text(encoding="utf-8")) for m, p in plan["validation"].items()}
    directions = {task: spec["direction"] for task, spec in plan["tasks"].items()}
    rows = results_rows(snakemake.params.models, validation, test, directions)
    with atomic_path(snakemake.output.table) as tmp:
        rows.to_csv(tmp, index=False, float_format="%.2f", lineterminator="\n")
    write_text_atomic(snakemake.output.markdown, results_markdown(rows))


run_logged(main, snakemake)
