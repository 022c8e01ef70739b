"""A finished run's galleries in clip-retrieval's layout, so that its tools (autofaiss,
clip back) read tuwen's features.

    python -m tuwen export clip-retrieval --out embeddings/
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tuwen.export.galleries import run_galleries
from tuwen.run.declaration import IMAGES


def export_clip_retrieval(run: Path, out: Path, galleries: list[str] | None = None) -> list[dict]:
    """Write each gallery in clip-retrieval's layout under `out/<gallery>/`: float16 embeddings
    in `img_emb/img_emb_<n>.npy` (images) or `text_emb/text_emb_<n>.npy` (texts), and row for
    row `metadata/metadata_<n>.parquet` (image_path or caption, and tuwen's id and model tag),
    one part per feature shard."""
    summary = []
    for gallery in run_galleries(run, galleries):
        folder = out / gallery.name
        emb = "img_emb" if gallery.kind == IMAGES else "text_emb"
        (folder / emb).mkdir(parents=True, exist_ok=True)
        (folder / "metadata").mkdir(parents=True, exist_ok=True)
        rows = 0
        for number, (_, ids, embeddings) in enumerate(gallery.rows()):
            part = str(number).zfill(5)
            np.save(folder / emb / f"{emb}_{part}.npy", embeddings.astype(np.float16))
            shown = gallery.shown.reindex(ids).fillna("").astype(str).tolist()
            column = "image_path" if gallery.kind == IMAGES else "caption"
            if gallery.kind == IMAGES:
                shown = [str((run / path).resolve()) if path else "" for path in shown]
            table = pd.DataFrame({column: shown, "id": ids, "model_tag": gallery.tag})
            pq.write_table(_arrow(table), folder / "metadata" / f"metadata_{part}.parquet")
            rows += len(ids)
        summary.append(
            {"gallery": gallery.name, "folder": str(folder), "rows": rows, "model_tag": gallery.tag}
        )
    return summary


def _arrow(table: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(table, preserve_index=False)
