"""Figures: a query with its ranked hits, and score histograms, with Chinese set in a real CJK font."""

from __future__ import annotations

import os
import random
import textwrap
import warnings
from dataclasses import dataclass
from importlib import resources

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tuwen.files.atomic import atomic_path  # noqa: E402
from tuwen.files.images import ImageRejected, load_image  # noqa: E402

CJK_FAMILY = "Noto Sans CJK SC"


def cjk_font_path() -> str:
    """Give the path of the Noto Sans CJK collection installed with the project."""
    return str(resources.files("noto_cjk_sans_otc") / "NotoSansCJK-Regular.ttc")


def use_cjk_font() -> None:
    """Make matplotlib set all text in Noto Sans CJK SC (Latin included, so nothing falls back)."""
    path = cjk_font_path()
    if not any(entry.fname == path for entry in font_manager.fontManager.ttflist):
        font_manager.fontManager.addfont(path)
    matplotlib.rcParams["font.family"] = [CJK_FAMILY]
    matplotlib.rcParams["axes.unicode_minus"] = False


# What a figure calls the score that ranked: a model's cosine, or a fusion recipe's score.
SCORE_NAMES = {"cosine": "余弦", "score": "融合得分"}


@dataclass(frozen=True)
class ShownHit:
    """One ranked result as a figure shows it: the score that ranked it, and its probability."""

    rank: int
    target_id: str
    score: float
    probability: float
    caption: str = ""
    image_path: str = ""


def ranking_score(columns: list[str]) -> str:
    """Give a top-k table's column of the score that ranked it: a fused table's `score`, else
    the one model's `cosine`."""
    return "score" if "score" in columns else "cosine"


def save_figure(figure: Figure, path: str | os.PathLike) -> list[str]:
    """Save `figure` as PNG atomically; give the glyph-missing warnings met while drawing it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    return [str(w.message) for w in caught if "missing from" in str(w.message)]


def _show_image(axis, image_path: str, title: str) -> None:
    axis.axis("off")
    axis.set_title(title, fontsize=9)
    try:
        image, _ = load_image(image_path, None)  # accepted at ingest, under the run's limit
    except ImageRejected:
        axis.text(0.5, 0.5, "（图像无法读取）", ha="center", va="center", fontsize=9)
        return
    image.thumbnail((320, 320))
    axis.imshow(image)


def text_to_image_figure(caption: str, query_id: str, hits: list[ShownHit], score_name: str) -> Figure:
    """Give the t2i figure: the query caption over its ranked images, each with its rank, the
    score that ranked it (called `score_name`) and its probability."""
    use_cjk_font()
    figure, axes = plt.subplots(1, max(len(hits), 1), figsize=(2.4 * max(len(hits), 1), 3.2))
    axes = list(axes) if len(hits) > 1 else [axes]
    figure.suptitle("\n".join(textwrap.wrap(f"查询文本 {query_id}：{caption}", 48)), fontsize=11)
    for axis, hit in zip(axes, hits, strict=False):
        _show_image(
            axis,
            hit.image_path,
            f"第{hit.rank}名 {hit.target_id}\n{score_name} {hit.score:.3f}  概率 {hit.probability:.3f}",
        )
    figure.tight_layout()
    return figure


def image_to_text_figure(image_path: str, query_id: str, hits: list[ShownHit], score_name: str) -> Figure:
    """Give the i2t figure: the query image beside its ranked captions, each with its rank, the
    score that ranked it (called `score_name`) and its probability."""
    use_cjk_font()
    figure, (image_axis, text_axis) = plt.subplots(
        1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 2.2]}
    )
    _show_image(image_axis, image_path, f"查询图像 {query_id}")
    text_axis.axis("off")
    lines = []
    for hit in hits:
        wrapped = textwrap.wrap(hit.caption, 30) or [""]
        lines.append(
            f"第{hit.rank}名  {hit.target_id}  {score_name} {hit.score:.3f}  概率 {hit.probability:.3f}"
        )
        lines.extend(f"    {part}" for part in wrapped[:2])
    text_axis.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=10, linespacing=1.5)
    figure.tight_layout()
    return figure


def placeholder_figure(message: str) -> Figure:
    """Give a figure that only says why there is nothing to show."""
    use_cjk_font()
    figure, axis = plt.subplots(figsize=(6, 1.5))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    return figure


def score_histogram_figure(scores: dict[str, list[float]], title: str, score_name: str) -> Figure:
    """Give a histogram of the scores that ranked, one series per label (e.g. rank 1 vs ranks 2-5)."""
    use_cjk_font()
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for label, values in scores.items():
        if values:
            axis.hist(values, bins=30, alpha=0.6, label=label)
    axis.set_xlabel(score_name)
    axis.set_ylabel("数量")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    return figure


def sample_queries(query_ids: list[str], count: int, seed: int) -> list[str]:
    """Give up to `count` query ids, chosen by `seed`, in their original order."""
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(query_ids)), min(count, len(query_ids))))
    return [query_ids[i] for i in chosen]


def training_curves_figure(log_rows: list[dict], summary: dict) -> Figure:
    """Give the training figure: loss per step, and validation recall before and after each epoch."""
    use_cjk_font()
    figure, (loss_axis, recall_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
    loss_axis.plot([r["step"] for r in log_rows], [r["loss"] for r in log_rows], lw=1)
    loss_axis.set_xlabel("步 (step)")
    loss_axis.set_ylabel("对比损失 (InfoNCE loss)")
    loss_axis.set_title("训练损失")
    epochs = [{"epoch": 0, **summary["before"]}, *summary["epochs"]]
    x = [e["epoch"] for e in epochs]
    for task, label in (("t2i", "文本→图像 R@5"), ("i2t", "图像→文本 R@5")):
        recall_axis.plot(x, [e[task]["R@5"] for e in epochs], marker="o", ms=3, label=label)
    recall_axis.plot(x, [e["mean_recall"] for e in epochs], marker="o", ms=3, label="平均召回 (mean recall)")
    if summary.get("best_epoch"):
        recall_axis.axvline(summary["best_epoch"], color="grey", ls="--", lw=1, label="保留的轮次 (kept)")
    recall_axis.set_xlabel("轮次 (epoch; 0 = 训练前)")
    recall_axis.set_ylim(0, 1)
    recall_axis.set_title("验证集召回率")
    recall_axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
