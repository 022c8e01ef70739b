"""What a finished run tells its user last: where the tables are, how good they are, what was
left out, and where to look next (printed by the workflow's `onsuccess`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tuwen.report.notices import untrained_notice
from tuwen.run import layout
from tuwen.run.declaration import Run

DIRECTIONS = {"t2i": "text → image", "i2t": "image → text"}


def run_summary(declared: Run, run: Path = Path(".")) -> str:
    """Give the closing summary of the run `declared` in folder `run`, from the files it wrote."""
    lines = ["", "tuwen: the run is complete."]
    notice = untrained_notice(declared)
    if notice:
        lines.append(f"  WARNING: {notice}")
    tasks = declared.tasks
    titles = {
        name: DIRECTIONS[t.direction] + ("" if name == t.direction else f", {name}")
        for name, t in tasks.items()
    }
    tables = [
        f"{layout.result_table(task.table)} ({titles[name]})"
        for name, task in tasks.items()
        if task.table and (run / layout.result_table(task.table)).is_file()
    ]
    if tables:
        lines.append("  result tables: " + ", ".join(tables))
    metrics_path = run / layout.evaluation("metrics.json")
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        for name in tasks:
            if name in metrics:
                m = metrics[name]
                lines.append(
                    f"  {titles[name]}: R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  R@10 {m['R@10']:.3f}"
                    f"  ({m['queries_scored']} queries with ground truth)"
                )
    chosen_path = run / layout.fusion("chosen.json")
    if chosen_path.is_file():
        chosen = json.loads(chosen_path.read_text(encoding="utf-8"))
        ranked = ", ".join(f"{DIRECTIONS[t]} by {c['label']}" for t, c in chosen.items() if t in DIRECTIONS)
        lines.append(f"  ranked as chosen on validation: {ranked} ({layout.evaluation('fusion.csv')})")
    accounting_path = run / layout.summary("accounting.csv")
    if accounting_path.is_file():
        accounting = pd.read_csv(accounting_path)
        rejected = int(accounting["rejected"].sum())
        not_encoded = int(pd.to_numeric(accounting["not_encoded"], errors="coerce").fillna(0).sum())
        lines.append(
            f"  left out: {rejected} inputs rejected at ingest ({layout.rejects('*')}), "
            f"{not_encoded} accepted but not encoded ({layout.summary('not_encoded.csv')}); "
            f"every count in {layout.summary('accounting.csv')}"
        )
    look = []
    if (run / layout.browse("index.html")).is_file():
        look.append(f"open {layout.browse('index.html')}")
    if not tasks:
        look.append(f"the encoded collections in {layout.features_folder('<model tag>', '<collection>')}")
    look.append("python -m tuwen serve  (a search page and JSON API on http://127.0.0.1:8000/)")
    lines.append("  look further: " + "; ".join(look))
    return "\n".join(lines)
