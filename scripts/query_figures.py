"""Snakemake entry point: figures of sampled queries with their ranked hits, and score histograms."""

import logging

import pandas as pd

from tuwen.logs import run_logged
from tuwen.report.figures import (
    SCORE_NAMES,
    ShownHit,
    image_to_text_figure,
    placeholder_figure,
    ranking_score,
    sample_queries,
    save_figure,
    score_histogram_figure,
    text_to_image_figure,
)
from tuwen.report.tables import TABLE_RANKS
from tuwen.run.declaration import TEXTS
from tuwen.run.settings import read_settings


def main(snakemake) -> None:
    queries_are_texts = snakemake.params.query_kind == TEXTS
    topk = pd.read_parquet(snakemake.input.topk)
    topk = topk[topk["rank"] <= TABLE_RANKS]
    # The score that ranked: the one model's cosine, or the fusion recipe's score.
    score = ranking_score(list(topk.columns))
    score_name = SCORE_NAMES[score]
    captions = pd.read_parquet(snakemake.input.captions)
    caption_of = dict(zip(captions["text_id"], captions["caption"], strict=False))
    images = pd.read_parquet(snakemake.input.images)
    path_of = dict(zip(images["image_id"], images["path"], strict=False))
    query_ids = topk["query_id"].drop_duplicates().tolist()
    seed = read_settings(snakemake.input.settings)["seed"]
    chosen = sample_queries(query_ids, len(snakemake.output.figures), seed)
    by_query = {q: rows for q, rows in topk.groupby("query_id", sort=False)}
    missing_glyphs = []
    for index, path in enumerate(snakemake.output.figures):
        if index >= len(chosen):
            figure = placeholder_figure(f"只有 {len(chosen)} 个查询（only {len(chosen)} queries）")
        else:
            query = chosen[index]
            hits = [
                ShownHit(
                    int(r["rank"]),
                    r["target_id"],
                    float(r[score]),
                    float(r["probability"]),
                    caption_of.get(r["target_id"], ""),
                    path_of.get(r["target_id"], ""),
                )
                for r in by_query[query].to_dict("records")
            ]
            if queries_are_texts:
                figure = text_to_image_figure(caption_of.get(query, ""), query, hits, score_name)
            else:
                figure = image_to_text_figure(path_of.get(query, ""), query, hits, score_name)
        missing_glyphs += save_figure(figure, path)
    scores = {
        "第1名 (rank 1)": topk.loc[topk["rank"] == 1, score].tolist(),
        "第2–5名 (ranks 2–5)": topk.loc[topk["rank"] > 1, score].tolist(),
    }
    direction = "文本→图像 (text → image)" if queries_are_texts else "图像→文本 (image → text)"
    missing_glyphs += save_figure(
        score_histogram_figure(scores, direction, score_name), snakemake.output.histogram
    )
    for warning in sorted(set(missing_glyphs)):
        logging.warning("font lacks a glyph: %s", warning)


run_logged(main, snakemake)
