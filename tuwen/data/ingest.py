"""Ingest: image folders and CSV files to validated manifests plus rejects reports.

Every input id ends in a manifest row with status `ok` or `rejected` (with a stable
reason code and a sentence); hidden and system files get status `ignored`.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from tuwen.clip.tokens import is_truncated
from tuwen.files.atomic import atomic_path
from tuwen.files.containers import (
    CONTAINER_SUFFIXES,
    FOLDER,
    ContainerError,
    Member,
    container_files,
    image_members,
    locator,
)
from tuwen.files.folders import folder_entries, is_image_name, is_system_file
from tuwen.files.images import ImageProbe, ImageRejected, probe_image, probe_image_data
from tuwen.files.parquet import read_metadata, read_table, write_table
from tuwen.files.records import InputError, Records, read_records, single, values

OK, REJECTED, IGNORED = "ok", "rejected", "ignored"
REJECTS_COLUMNS = ["id", "source_file", "row", "reason_code", "reason"]

IMAGE_MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("digest", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("taken", pa.string()),  # EXIF DateTimeOriginal, ISO 8601 (None: the file's mtime tells)
        ("status", pa.string()),
        ("reason_code", pa.string()),
        ("reason", pa.string()),
    ]
)


# Nullable integers: as float64, a nanosecond mtime loses its last digits and never matches.
INTEGER_COLUMNS = {"bytes": "Int64", "mtime_ns": "Int64", "width": "Int32", "height": "Int32"}
# A column that may be None in every row (no photo with an EXIF date) is still a string column.
STRING_COLUMNS = {"taken": "str"}


__all__ = ["InputError", "is_system_file"]  # re-exported: ingest's errors and its rule for hidden files


def scan_image_folder(
    folder: str | os.PathLike,
    max_pixels: int,
    workers: int = 1,
    previous: pd.DataFrame | None = None,
    verify_decode: bool = True,
) -> pd.DataFrame:
    """Give the image manifest of `folder`: one row per file under it (recursively), in
    `tuwen.files.folders.folder_entries` order, each named by its path relative to the folder.

    `previous` is an earlier manifest of the same folder made with the same settings:
    a file whose name, size and mtime are unchanged keeps its row there and is not read
    again; every other file is read, hashed and checked (see `probe_image`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder does not exist or is not a folder")
    names = list(folder_entries(folder))
    reused = _unchanged_rows(folder, names, previous)
    known = set(reused["image_id"])
    todo = [name for name in names if name not in known]

    # Header parsing is pure Python (GIL-bound), so a large scan runs in processes, in
    # chunks that keep the pool's own bookkeeping small next to the work.
    chunks = [(str(folder), todo[i : i + 256], max_pixels, verify_decode) for i in range(0, len(todo), 256)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = [row for part in pool.map(_manifest_rows, chunks) for row in part]
    else:
        rows = [row for chunk in chunks for row in _manifest_rows(chunk)]
    # Built as objects first: pandas would turn an int column holding None into float64.
    fresh = pd.DataFrame(rows, columns=IMAGE_MANIFEST_SCHEMA.names, dtype=object).astype(INTEGER_COLUMNS)
    manifest = pd.concat([reused, fresh], ignore_index=True) if len(reused) else fresh
    position = {name: i for i, name in enumerate(names)}
    order = np.argsort([position[name] for name in manifest["image_id"]], kind="stable")
    return manifest.iloc[order].reset_index(drop=True).infer_objects().astype(STRING_COLUMNS)


def scan_image_source(
    source: str | os.PathLike,
    image_format: str,
    max_pixels: int,
    workers: int = 1,
    previous: pd.DataFrame | None = None,
    verify_decode: bool = True,
    image_column: str = "image",
    id_column: str = "id",
) -> pd.DataFrame:
    """Give the image manifest of a collection's source: a folder (`scan_image_folder`) or
    container files read in place (`scan_containers`)."""
    if image_format == FOLDER:
        return scan_image_folder(source, max_pixels, workers, previous, verify_decode)
    return scan_containers(source, image_format, max_pixels, previous, verify_decode, image_column, id_column)


def scan_containers(
    source: str | os.PathLike,
    image_format: str,
    max_pixels: int,
    previous: pd.DataFrame | None = None,
    verify_decode: bool = True,
    image_column: str = "image",
    id_column: str = "id",
) -> pd.DataFrame:
    """Give the image manifest of images inside container files (tuwen.files.containers): one
    row per record, in container then record order, its `path` the image's locator and its id
    as the format gives it (a TSV's image_id, a tar sample's key, a parquet's id column).

    A record without an image, with an image that does not read, or with an id given before
    is rejected with its reason and its container's record number. The rows of a container
    whose modification time is that of `previous` are kept without reading it again.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: does not exist")
    files = container_files(source, image_format)
    if not files:
        raise InputError(
            f"{source}: holds no {image_format} container ({', '.join(CONTAINER_SUFFIXES[image_format])})"
        )
    parts: list[pd.DataFrame] = []
    seen: dict[str, str] = {}
    for container in files:
        mtime = container.stat().st_mtime_ns
        kept = _unchanged_container(previous, container, mtime)
        if kept is not None:
            rows = kept.to_dict("records")
        else:
            try:
                members = list(image_members(container, image_format, image_column, id_column))
            except ContainerError as error:
                raise InputError(str(error)) from None
            rows = [
                _container_row(container, mtime, m, data, max_pixels, verify_decode) for m, data in members
            ]
        for row in rows:
            where = seen.get(row["image_id"])
            if where is not None and row["status"] == OK:
                row.update(
                    status=REJECTED,
                    reason_code="duplicate_id",
                    reason=f"{row['path']}: image id {row['image_id']} already given by {where}; first kept",
                )
            elif row["status"] == OK:
                seen[row["image_id"]] = row["path"]
        parts.append(pd.DataFrame(rows, columns=IMAGE_MANIFEST_SCHEMA.names, dtype=object))
    return pd.concat(parts, ignore_index=True).astype(INTEGER_COLUMNS).infer_objects().astype(STRING_COLUMNS)


def _container_row(
    container: Path, mtime: int, member: Member, data: bytes | None, max_pixels: int, verify_decode: bool
) -> dict:
    path = locator(container, member.member or f"record {member.row}")
    row: dict[str, object] = {"image_id": member.item_id, "path": path, "bytes": None, "mtime_ns": mtime}
    row.update(digest=None, width=None, height=None, format=None, taken=None, status=OK, reason_code="")
    row["reason"] = ""
    where = f"{container} record {member.row}"
    if not member.item_id:
        return {
            **row,
            "image_id": f"{container.name}#{member.row}",
            "status": REJECTED,
            "reason_code": "empty_id",
            "reason": f"{where}: no image id",
        }
    if member.problem or data is None:
        return {**row, "status": REJECTED, "reason_code": "no_image", "reason": f"{where}: {member.problem}"}
    try:
        probe = probe_image_data(data, f"{where} ({member.item_id})", max_pixels, verify_decode)
    except ImageRejected as rejected:
        return {**row, "status": REJECTED, "reason_code": rejected.code, "reason": rejected.message}
    return _probed(row, probe)


def _unchanged_container(previous: pd.DataFrame | None, container: Path, mtime: int) -> pd.DataFrame | None:
    if previous is None or not len(previous):
        return None
    prefix = locator(container, "")
    rows = previous[previous["path"].str.startswith(prefix, na=False)]
    if not len(rows) or not (rows["mtime_ns"] == mtime).all():
        return None
    return rows[IMAGE_MANIFEST_SCHEMA.names].copy()


def _manifest_rows(chunk: tuple[str, list[str], int, bool]) -> list[dict]:
    folder, names, max_pixels, verify_decode = chunk
    return [_manifest_row(Path(folder), name, max_pixels, verify_decode) for name in names]


def _manifest_row(folder: Path, image_id: str, max_pixels: int, verify_decode: bool) -> dict:
    path = folder / image_id
    row: dict[str, object] = {"image_id": image_id, "path": str(path), "bytes": None, "mtime_ns": None}
    row["digest"] = None
    row.update(width=None, height=None, format=None, taken=None, status=OK, reason_code="", reason="")
    if path.is_dir():  # only hidden folders are listed, not entered
        return {
            **row,
            "status": IGNORED,
            "reason_code": "hidden_folder",
            "reason": f"{path}: hidden folder inside an image folder; not read",
        }
    if is_system_file(path.name):
        return {
            **row,
            "status": IGNORED,
            "reason_code": "system_file",
            "reason": f"{path}: hidden or system file, not an image; ignored",
        }
    if not is_image_name(path.name):
        return {
            **row,
            "status": IGNORED,
            "reason_code": "not_image_file",
            "reason": f"{path}: its name does not end as an image format PIL reads; not read",
        }
    # Stat before reading: a file that changes during the read gets a new mtime and is
    # validated again next time.
    with contextlib.suppress(OSError):
        stat = path.stat()
        row.update(bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
    try:
        probe = probe_image(path, max_pixels, verify_decode)
    except ImageRejected as rejected:
        return {**row, "status": REJECTED, "reason_code": rejected.code, "reason": rejected.message}
    return _probed(row, probe)


def _probed(row: dict, probe: ImageProbe) -> dict:
    """A manifest row with what reading the image found."""
    return {
        **row,
        "bytes": probe.num_bytes,
        "digest": probe.digest,
        "width": probe.width,
        "height": probe.height,
        "format": probe.format,
        "taken": probe.taken,
    }


def _unchanged_rows(folder: Path, names: list[str], previous: pd.DataFrame | None) -> pd.DataFrame:
    """Give the rows of `previous` whose file still has the same size and mtime."""
    empty = pd.DataFrame(columns=IMAGE_MANIFEST_SCHEMA.names)
    if previous is None or not names:
        return empty
    # Ignored entries are cheap to classify again; rows without a stat cannot be matched.
    usable = previous[(previous["status"] != IGNORED) & previous["mtime_ns"].notna()]
    usable = usable[usable["image_id"].isin(names)].astype(INTEGER_COLUMNS)
    now = [_size_and_mtime(folder / name) for name in usable["image_id"]]
    sizes = np.asarray([size for size, _ in now], dtype=np.int64)
    mtimes = np.asarray([mtime for _, mtime in now], dtype=np.int64)
    same = (usable["bytes"].to_numpy(np.int64) == sizes) & (usable["mtime_ns"].to_numpy(np.int64) == mtimes)
    unchanged = usable[same].copy()
    unchanged["path"] = [str(folder / name) for name in unchanged["image_id"]]
    return unchanged[IMAGE_MANIFEST_SCHEMA.names].reset_index(drop=True)


def _size_and_mtime(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def read_scan_cache(path: str | os.PathLike, settings: dict) -> pd.DataFrame | None:
    """Give the manifest an earlier scan left at `path`, if it was made with the same `settings`."""
    path = Path(path)
    if not path.is_file() or read_metadata(path).get("scan_settings") != settings:
        return None
    table = read_table(path)
    if not set(IMAGE_MANIFEST_SCHEMA.names) <= set(table.column_names):
        return None  # an older scan, without a column now recorded (EXIF dates): read again
    return table.to_pandas().astype(INTEGER_COLUMNS)


def write_scan_cache(manifest: pd.DataFrame, path: str | os.PathLike, settings: dict) -> None:
    """Keep a folder's manifest for the next scan (outside Snakemake's outputs, which it deletes)."""
    table = pa.Table.from_pandas(manifest, schema=IMAGE_MANIFEST_SCHEMA, preserve_index=False)
    write_table(table, path, {"scan_settings": settings})


TEXT_MANIFEST_COLUMNS = [
    "text_id",
    "image_id",
    "caption",
    "truncated",
    "row",
    "status",
    "reason_code",
    "reason",
]


def read_text_set(
    path: str | os.PathLike, id_column: str, caption_column: str, images: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Give the text manifest of a caption table (CSV, TSV, JSON Lines or Parquet), in file order.

    `id_column` names each caption; for training pairs it is the image column, and
    `images` is the folder's manifest: a row whose image is absent or rejected is rejected.
    A pair's caption is identified by its image's id (its path in the image folder); an
    image's further captions (COCO's five, CN-CLIP's texts naming one image) are pairs of
    their own, `{image_id}#2`, `#3`, ... in file order, and only a caption repeated for the
    same image is a duplicate.
    `truncated` marks captions longer than cn_clip's context: kept, and counted.
    """
    records = read_records(path, [id_column, caption_column])
    image_status = _status_by_id(images, "image_id") if images is not None else None
    pairs = image_status is not None
    first_row: dict[str, tuple[int, str]] = {}
    # A pair's image -> the rows of its accepted captions, by caption.
    captions_of: dict[str, dict[str, int]] = {}
    rows = []
    for number, item_id, caption, problem in _captions(records, id_column, caption_column, pairs):
        row = {
            "text_id": item_id,
            "image_id": item_id if pairs else "",
            "caption": caption,
            "truncated": is_truncated(caption),
            "row": number,
            "status": OK,
            "reason_code": "",
            "reason": "",
        }
        where = f"{records.path} row {number}"
        earlier_captions = captions_of.setdefault(item_id, {}) if pairs else {}
        code, reason = "", ""
        if problem:
            code, reason = "list_value", f"{where}: {problem}"
        elif not item_id:
            code, reason = "empty_id", f"{where}: empty {id_column}"
        elif pairs and caption in earlier_captions:
            code = "duplicate_id"
            reason = (
                f"{where}: {id_column} {item_id} already paired with this caption "
                f"in row {earlier_captions[caption]}"
            )
        elif not pairs and item_id in first_row:
            earlier, earlier_caption = first_row[item_id]
            same = "same" if earlier_caption == caption else "a different"
            code = "duplicate_id"
            reason = (
                f"{where}: {id_column} {item_id} already given in row {earlier} ({same} caption); first kept"
            )
        elif not caption:
            code, reason = "empty_caption", f"{where}: caption of {item_id} is empty"
        elif image_status is not None:
            code, reason = _image_problem(item_id, image_status, where)
        if code:
            row.update(status=REJECTED, reason_code=code, reason=reason)
        elif pairs:
            if earlier_captions:
                row["text_id"] = f"{item_id}#{len(earlier_captions) + 1}"
            earlier_captions[caption] = number
        first_row.setdefault(item_id, (number, caption))
        rows.append(row)
    return pd.DataFrame(rows, columns=TEXT_MANIFEST_COLUMNS)


def _captions(records: Records, id_column: str, caption_column: str, pairs: bool):
    """Give (row, id, caption, problem) of each record; a training pair's list of image ids
    (CN-CLIP's `image_ids`) gives one pair per image, any other list is a problem."""
    for number, record in records.rows:
        item, caption = record[id_column], record[caption_column]
        if isinstance(caption, list) or (isinstance(item, list) and not pairs):
            column = caption_column if isinstance(caption, list) else id_column
            yield number, str(item), str(caption), f"{column} holds a list; name a column of single values"
        elif isinstance(item, list):
            for image_id in values(item) or [""]:
                yield number, image_id, caption.strip(), ""
        else:
            yield number, item.strip(), caption.strip(), ""


QUERY_MANIFEST_COLUMNS = ["image_id", "row", "status", "reason_code", "reason"]


def read_query_list(
    path: str | os.PathLike,
    collection: pd.DataFrame,
    id_column: str = "image_id",
    collection_id_column: str = "image_id",
) -> pd.DataFrame:
    """Give a task's query list (the contest's `image_test.csv`): ids in its `id_column`,
    checked against the manifest of the collection they name (ids in `collection_id_column`)."""
    records = read_records(path, [id_column])
    image_status = _status_by_id(collection, collection_id_column)
    seen: dict[str, int] = {}
    rows = []
    for number, record in records.rows:
        where = f"{records.path} row {number}"
        image_id = single(record[id_column], where, id_column)
        code, reason = "", ""
        if not image_id:
            code, reason = "empty_id", f"{where}: empty {id_column}"
        elif image_id in seen:
            code, reason = (
                "duplicate_id",
                f"{where}: {id_column} {image_id} already listed in row {seen[image_id]}",
            )
        else:
            seen[image_id] = number
            code, reason = _image_problem(image_id, image_status, where)
        rows.append(
            {
                "image_id": image_id,
                "row": number,
                "status": REJECTED if code else OK,
                "reason_code": code,
                "reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=QUERY_MANIFEST_COLUMNS)


def _status_by_id(manifest: pd.DataFrame, id_column: str) -> dict[str, tuple[str, str]]:
    pairs = zip(manifest["status"], manifest["reason"], strict=True)
    return dict(zip(manifest[id_column], pairs, strict=True))


def _image_problem(image_id: str, image_status: dict[str, tuple[str, str]], where: str) -> tuple[str, str]:
    if image_id not in image_status:
        return "image_missing", f"{where}: names {image_id}, which is not in the collection"
    status, reason = image_status[image_id]
    if status != OK:
        return "image_rejected", f"{where}: names {image_id}, which was rejected: {reason}"
    return "", ""


def rejects_of(manifest: pd.DataFrame, id_column: str, source_file: str) -> pd.DataFrame:
    """Give the rejects report rows (rejected and ignored entries) of a manifest."""
    bad = manifest[manifest["status"] != OK]
    rows = bad["row"] if "row" in bad.columns else pd.Series([""] * len(bad), index=bad.index)
    return pd.DataFrame(
        {
            "id": bad[id_column].to_numpy(),
            "source_file": source_file,
            "row": rows.to_numpy(),
            "reason_code": bad["reason_code"].to_numpy(),
            "reason": bad["reason"].to_numpy(),
        },
        columns=REJECTS_COLUMNS,
    )


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike, schema: pa.Schema | None = None) -> None:
    """Write a manifest table to Parquet atomically."""
    table = pa.Table.from_pandas(manifest, schema=schema, preserve_index=False)
    write_table(table, path)


def write_rejects(rejects: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a rejects report as UTF-8 CSV atomically."""
    with atomic_path(path) as tmp:
        rejects.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")


def status_counts(manifest: pd.DataFrame) -> dict[str, int]:
    """Give counts per status and per reason code, for the run summary."""
    counts = {f"status:{k}": int(v) for k, v in manifest["status"].value_counts().items()}
    for code, count in manifest.loc[manifest["status"] != OK, "reason_code"].value_counts().items():
        counts[f"reason:{code}"] = int(count)
    return counts


def accepted_captions(manifest_path: str | os.PathLike) -> dict[str, str]:
    """Give the accepted captions of a text manifest by text id (the first of a repeated id)."""
    texts = pd.read_parquet(manifest_path, columns=["text_id", "caption", "status"])
    texts = texts[texts["status"] == OK].drop_duplicates("text_id")
    return dict(zip(texts["text_id"], texts["caption"], strict=True))
